// Mutual (transductive) scoring among unlabelled images of one category, after MuSc (Li et al., "MuSc: Zero-Shot Industrial
// Anomaly Classification and Segmentation with Mutual Scoring of the Unlabeled Images", ICLR 2024), on the prototype
// features psi of eq. 12:
//
//   d_j(p) = min_{q in grid} || psi(x_i)_p - psi(x_j)_q ||^2      for each reference image j of image i (the distance of E, eq. 14)
//   M_i(p) = mean of the smallest k = max(1, floor(fraction * K_i)) values of { d_j(p) : j in refs(i) }
//
// A normal patch finds a close patch in most other images; an anomalous one only in the few images that share its defect,
// so the mean of the smallest fraction (MuSc: 30 %) stays low for normal and high for anomalous patches.
#pragma once

#include <cstdint>

#include <torch/torch.h>

#include "pipeline/prototype_bank.h"

namespace asd {

struct MutualOptions {
  /// The fraction of the smallest per-reference distances averaged (MuSc: 0.3), in (0, 1].
  double fraction = 0.3;
  /// Bound on the temporary distance block of one image against a chunk of its references (P x J*P floats).
  int64_t max_chunk_bytes = kDefaultMaxChunkBytes;
};

/// Smallest-values count of M for K references: max(1, floor(fraction * K)) (floor with a 1e-9 guard against fraction * K
/// landing just below an integer in floating point).
int64_t mutual_count(double fraction, int64_t refs);

/// M of every image of a set: features [n,C,h,w] (one device, float32 or convertible), refs [n,K] int64 (the reference images
/// of each image: K distinct indices in [0, n), none equal to the row's own) or an undefined tensor for all the others (K =
/// n - 1). Returns [n,h,w] float32 on the features' device, >= 0, in squared feature units.
///
/// Each unordered pair {i, j} that either direction needs is computed once, as one block of squared distances between the
/// patches of i and of j: its row minima give d_j for i, its column minima d_i for j. Blocks of one image against a chunk of
/// J partners are one GEMM ([P,C] x [C,J*P], P = h*w), after centring every patch on the mean patch of the set (as
/// min_squared_distance, for float32 accuracy), clamped at 0. Memory: the per-reference table n*K*P floats, the centred
/// features n*P*C floats, and one block of at most max_chunk_bytes.
/// ASD_ERR_INVALID_ARGUMENT for fewer than 2 images, a bad refs table or fraction.
torch::Tensor mutual_scores(const torch::Tensor& features, const torch::Tensor& refs, const MutualOptions& options = {});

}  // namespace asd

#include "pipeline/mutual_scoring.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include "core/error.h"

namespace asd {

int64_t mutual_count(double fraction, int64_t refs) {
  require(fraction > 0 && fraction <= 1, [&] { return "mutual scoring: fraction must be in (0, 1], got " + std::to_string(fraction); });
  require(refs >= 1, "mutual scoring: at least one reference image is needed");
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(fraction * static_cast<double>(refs) + 1e-9)));
}

namespace {

/// The reference table as [n][K] indices: the given one (checked) or all the others.
std::vector<std::vector<int64_t>> reference_table(const torch::Tensor& refs, int64_t n) {
  std::vector<std::vector<int64_t>> table(static_cast<size_t>(n));
  if (!refs.defined()) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (j != i) table[static_cast<size_t>(i)].push_back(j);
    return table;
  }
  require(refs.dim() == 2 && refs.size(0) == n && refs.size(1) >= 1,
          [&] { return "mutual scoring: refs must be [" + std::to_string(n) + ", K] with K >= 1"; });
  const torch::Tensor r = refs.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t k = r.size(1);
  const int64_t* p = r.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    auto& row = table[static_cast<size_t>(i)];
    row.assign(p + i * k, p + (i + 1) * k);
    std::vector<int64_t> sorted = row;
    std::sort(sorted.begin(), sorted.end());
    require(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(),
            [&] { return "mutual scoring: the references of image " + std::to_string(i) + " repeat an image"; });
    for (int64_t j : row) {
      require(j >= 0 && j < n && j != i, [&] {
        return "mutual scoring: image " + std::to_string(i) + " has reference " + std::to_string(j) + " (must be another image of the " +
               std::to_string(n) + ")";
      });
    }
  }
  return table;
}

/// The slots that a block of the pair (a, b), a < b, fills: d_b for a at slot ab of a's row, d_a for b at slot ba of b's (-1: not needed).
struct PairSlots {
  int64_t b = 0, ab = -1, ba = -1;
};

}  // namespace

torch::Tensor mutual_scores(const torch::Tensor& features, const torch::Tensor& refs, const MutualOptions& options) {
  require(features.dim() == 4, "mutual scoring: features must be [n,C,h,w]");
  const int64_t n = features.size(0), c = features.size(1), h = features.size(2), w = features.size(3), positions = h * w;
  require(n >= 2, "mutual scoring needs at least 2 images (each is scored against the others)");
  require(c >= 1 && positions >= 1, "mutual scoring: empty feature maps");
  require(options.max_chunk_bytes > 0, "mutual scoring: max_chunk_bytes must be > 0");
  const auto table = reference_table(refs, n);
  const int64_t k = static_cast<int64_t>(table[0].size());
  const int64_t smallest = mutual_count(options.fraction, k);
  torch::NoGradGuard no_grad;

  // Centred patches [n, P, C] and their squared norms [n, P].
  const torch::Tensor raw = features.to(torch::kFloat32).permute({0, 2, 3, 1}).reshape({n, positions, c});
  const torch::Tensor x = (raw - raw.reshape({n * positions, c}).mean(0)).contiguous();
  const torch::Tensor norms = x.pow(2).sum(2);

  // Every unordered pair once, with the slots of both directions.
  std::vector<std::map<int64_t, PairSlots>> pairs(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t s = 0; s < k; ++s) {
      const int64_t j = table[static_cast<size_t>(i)][static_cast<size_t>(s)];
      PairSlots& slot = pairs[static_cast<size_t>(std::min(i, j))][std::max(i, j)];
      slot.b = std::max(i, j);
      (i < j ? slot.ab : slot.ba) = s;
    }
  }

  // d[i, s, p]: the distance of patch p of image i to its nearest patch in reference s of image i.
  torch::Tensor d = torch::empty({n, k, positions}, x.options());
  const int64_t block_row_bytes = positions * positions * static_cast<int64_t>(sizeof(float));
  const int64_t partners_per_block = std::max<int64_t>(1, options.max_chunk_bytes / block_row_bytes);
  for (int64_t a = 0; a < n; ++a) {
    std::vector<PairSlots> partners;
    for (const auto& kv : pairs[static_cast<size_t>(a)]) partners.push_back(kv.second);
    const torch::Tensor xa = x[a];                      // [P, C]
    const torch::Tensor na = norms[a].unsqueeze(1);     // [P, 1]
    for (size_t first = 0; first < partners.size(); first += static_cast<size_t>(partners_per_block)) {
      const size_t count = std::min(partners.size() - first, static_cast<size_t>(partners_per_block));
      std::vector<int64_t> ids;
      for (size_t t = 0; t < count; ++t) ids.push_back(partners[first + t].b);
      const torch::Tensor idx = torch::tensor(ids, torch::TensorOptions().dtype(torch::kInt64)).to(x.device());
      const int64_t jn = static_cast<int64_t>(count);
      const torch::Tensor xb = x.index_select(0, idx).reshape({jn * positions, c});           // [J*P, C]
      const torch::Tensor nb = norms.index_select(0, idx).reshape({1, jn * positions});       // [1, J*P]
      // ||a_p||^2 + ||b_q||^2 - 2 a_p.b_q for every patch p of a and q of each partner: one GEMM, one [P, J*P] block.
      torch::Tensor block = torch::addmm(nb, xa, xb.t(), /*beta=*/1, /*alpha=*/-2);
      block.add_(na);
      const torch::Tensor to_partner = block.view({positions, jn, positions}).amin(2).clamp_min_(0).t();  // [J, P]: d_b for a's patches
      const torch::Tensor to_a = block.amin(0).view({jn, positions}).clamp_min_(0);                       // [J, P]: d_a for b's patches
      for (size_t t = 0; t < count; ++t) {
        const PairSlots& ps = partners[first + t];
        const int64_t jj = static_cast<int64_t>(t);
        if (ps.ab >= 0) d[a][ps.ab].copy_(to_partner[jj]);
        if (ps.ba >= 0) d[ps.b][ps.ba].copy_(to_a[jj]);
      }
    }
  }
  // Mean of the smallest `smallest` per-reference distances of every patch, a few images at a time.
  torch::Tensor out = torch::empty({n, positions}, x.options());
  const int64_t rows = std::max<int64_t>(1, options.max_chunk_bytes / std::max<int64_t>(1, 2 * k * positions * static_cast<int64_t>(sizeof(float))));
  for (int64_t start = 0; start < n; start += rows) {
    const int64_t m = std::min(rows, n - start);
    const torch::Tensor part = d.narrow(0, start, m);
    const torch::Tensor low = smallest == k ? part : std::get<0>(torch::topk(part, smallest, /*dim=*/1, /*largest=*/false, /*sorted=*/false));
    out.narrow(0, start, m).copy_(low.mean(1));
  }
  return out.view({n, h, w});
}

}  // namespace asd

// safetensors reader/writer: round trips of every dtype, and malformed files that must fail cleanly.
#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using asd::test::TempDir;

namespace {

// Writes [u64 header_len][header][data] exactly as given (header_len defaults to header.size()).
void write_raw(const fs::path& path, const std::string& header, const std::string& data, std::optional<uint64_t> header_len = {}) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header_len.value_or(header.size());
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  out << header << data;
}

// Loads `path` and returns the error; fails the test if loading succeeds or throws anything else.
asd::Error load_error(const fs::path& path) {
  try {
    asd::safetensors::load(path.string());
  } catch (const asd::Error& e) {
    return e;
  }
  ADD_FAILURE() << "loading " << path << " succeeded but should have failed";
  return asd::Error(ASD_OK, "");
}

void expect_format_error(const fs::path& path, const std::string& problem) {
  const asd::Error e = load_error(path);
  EXPECT_EQ(e.status(), ASD_ERR_FORMAT) << e.what();
  const std::string msg = e.what();
  EXPECT_NE(msg.find(path.string()), std::string::npos) << "message does not name the file: " << msg;
  EXPECT_NE(msg.find(problem), std::string::npos) << "message does not say '" << problem << "': " << msg;
  std::cout << "  [" << path.filename().string() << "] " << msg << "\n";
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtypeBitExact) {
  TempDir dir;
  torch::manual_seed(1);
  asd::TensorMap map;
  const torch::Tensor base = torch::randn({3, 5}) * 100;
  map.set("f32", base.to(torch::kFloat32));
  map.set("f16", base.to(torch::kFloat16));
  map.set("bf16", base.to(torch::kBFloat16));
  map.set("f64", base.to(torch::kFloat64));
  map.set("i64", torch::arange(-7, 8, torch::kInt64).reshape({3, 5}) * static_cast<int64_t>(1000000000000));
  map.set("i32", torch::arange(-7, 8, torch::kInt32));
  map.set("i16", torch::arange(-7, 8, torch::kInt16));
  map.set("i8", torch::arange(-7, 8, torch::kInt8));
  map.set("u8", torch::arange(0, 250, 17, torch::kUInt8));
  map.set("bool", torch::tensor({true, false, true}));
  map.set("scalar", torch::tensor(3.5f));
  map.set("empty", torch::empty({0, 4}));
  const fs::path path = dir.path() / "all.safetensors";
  asd::safetensors::save(path.string(), map, {{"format", "pt"}, {"note", "round trip"}});

  const asd::TensorMap back = asd::safetensors::load(path.string());
  ASSERT_EQ(back.names(), map.names());  // file order is insertion order
  for (const std::string& name : map.names()) {
    const torch::Tensor& a = map.at(name);
    const torch::Tensor& b = back.at(name);
    EXPECT_EQ(a.scalar_type(), b.scalar_type()) << name;
    EXPECT_EQ(a.sizes(), b.sizes()) << name;
    ASSERT_EQ(a.numel() * a.element_size(), b.numel() * b.element_size());
    EXPECT_EQ(0, std::memcmp(a.contiguous().data_ptr(), b.data_ptr(), a.numel() * a.element_size())) << name << " is not bit-identical";
  }
  const auto header = asd::safetensors::read_header(path.string());
  EXPECT_EQ(header.metadata.at("note"), "round trip");
  EXPECT_EQ(header.data_start % 8, 0u) << "data section must be 8-byte aligned";
}

TEST(Safetensors, HalfTypesConvertOnLoad) {
  TempDir dir;
  asd::TensorMap map;
  const torch::Tensor values = torch::tensor({0.5f, -1.25f, 3.0f, 65504.0f});  // exactly representable in f16
  map.set("h", values.to(torch::kFloat16));
  map.set("b", torch::tensor({0.5f, -1.25f, 3.0f, 256.0f}).to(torch::kBFloat16));
  map.set("ids", torch::tensor({1, 2, 3}, torch::kInt64));
  const fs::path path = dir.path() / "half.safetensors";
  asd::safetensors::save(path.string(), map);
  const asd::TensorMap back = asd::safetensors::load(path.string(), torch::kFloat32);
  EXPECT_EQ(back.at("h").scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(back.at("h"), values));
  EXPECT_TRUE(torch::equal(back.at("b"), torch::tensor({0.5f, -1.25f, 3.0f, 256.0f})));
  EXPECT_EQ(back.at("ids").scalar_type(), torch::kInt64) << "integer tensors are never converted";
}

TEST(Safetensors, ReadsReferenceFileFromShared) {
  // A file written by the reference implementation (Python safetensors) loads with the expected shapes.
  const std::string path = asd::test::shared_path("golden/vae_tiny/io.safetensors");
  const asd::TensorMap io = asd::safetensors::load(path);
  EXPECT_EQ(io.at("image").sizes(), torch::IntArrayRef({2, 3, 32, 32}));
  EXPECT_EQ(io.at("latents").sizes(), torch::IntArrayRef({2, 4, 8, 8}));
  EXPECT_LE(io.at("image").abs().max().item<float>(), 1.0f) << "image is documented to be in [-1, 1]";
}

TEST(Safetensors, MalformedFilesFailWithMessage) {
  TempDir dir;
  const auto p = [&](const char* name) { return dir.path() / name; };
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, '\0');

  { std::ofstream(p("empty.safetensors")); }
  expect_format_error(p("empty.safetensors"), "shorter than the 8-byte header length");

  { std::ofstream(p("short.safetensors"), std::ios::binary) << "abc"; }
  expect_format_error(p("short.safetensors"), "shorter than the 8-byte header length");

  // The header claims 60 bytes but the file ends after 10 of them.
  write_raw(p("truncated_header.safetensors"), "{\"a\":{\"dty", "", 60);
  expect_format_error(p("truncated_header.safetensors"), "runs past the end of the file");

  write_raw(p("length_past_eof.safetensors"), "{" + ok_entry + "}", eight, 1000);
  expect_format_error(p("length_past_eof.safetensors"), "runs past the end of the file");

  write_raw(p("huge_length.safetensors"), "{}", "", UINT64_MAX);
  expect_format_error(p("huge_length.safetensors"), "exceeds the 100000000-byte limit");

  write_raw(p("not_json.safetensors"), "{this is not json}", "");
  expect_format_error(p("not_json.safetensors"), "header is not valid JSON");

  write_raw(p("not_object.safetensors"), "[1,2,3]", "");
  expect_format_error(p("not_object.safetensors"), "header is not a JSON object");

  write_raw(p("offsets_past_data.safetensors"), R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight);
  expect_format_error(p("offsets_past_data.safetensors"), "run past the data section");

  write_raw(p("overlap.safetensors"),
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, '\0'));
  expect_format_error(p("overlap.safetensors"), "overlap");

  write_raw(p("shape_mismatch.safetensors"), R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight);
  expect_format_error(p("shape_mismatch.safetensors"), "shape x item size = 12 bytes but data_offsets span 8 bytes");

  write_raw(p("unknown_dtype.safetensors"), R"({"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", eight);
  expect_format_error(p("unknown_dtype.safetensors"), "unknown dtype 'F12'");

  write_raw(p("duplicate.safetensors"),
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight);
  expect_format_error(p("duplicate.safetensors"), "'a' appears twice");

  write_raw(p("negative_shape.safetensors"), R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight);
  expect_format_error(p("negative_shape.safetensors"), "shape entries must be non-negative integers");

  // A hostile shape whose element count overflows 64 bits must not wrap around to a small size.
  write_raw(p("overflow_shape.safetensors"),
            R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", eight);
  expect_format_error(p("overflow_shape.safetensors"), "shape x item size overflows 64 bits");

  write_raw(p("missing_field.safetensors"), R"({"a":{"dtype":"F32","shape":[2]}})", eight);
  expect_format_error(p("missing_field.safetensors"), "missing field 'data_offsets'");

  write_raw(p("reversed.safetensors"), R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight);
  expect_format_error(p("reversed.safetensors"), "begin 8 > end 0");

  write_raw(p("bad_metadata.safetensors"), R"({"__metadata__":{"k":1}})", "");
  expect_format_error(p("bad_metadata.safetensors"), "__metadata__ value 'k' is not a string");
}

TEST(Safetensors, MissingFileIsAnIoError) {
  try {
    asd::safetensors::load("/nonexistent/dir/model.safetensors");
    FAIL() << "expected an error";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_IO);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.safetensors"), std::string::npos);
  }
}

TEST(Safetensors, SaveIsAtomic) {
  TempDir dir;
  asd::TensorMap first;
  first.set("x", torch::ones({4}));
  const fs::path target = dir.path() / "model.safetensors";
  asd::safetensors::save(target.string(), first);

  // A failing save (a tensor type safetensors cannot store) leaves the old file intact and no temp file.
  asd::TensorMap bad;
  bad.set("x", torch::zeros({2}));
  bad.set("c", torch::zeros({2}, torch::kComplexFloat));
  EXPECT_THROW(asd::safetensors::save(target.string(), bad), asd::Error);
  EXPECT_TRUE(torch::equal(asd::safetensors::load(target.string()).at("x"), torch::ones({4})));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1) << "a temporary file was left behind";

  // Saving into a directory that does not exist fails with an I/O error naming the target.
  try {
    asd::safetensors::save((dir.path() / "missing" / "m.safetensors").string(), first);
    FAIL() << "expected an error";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_IO);
    EXPECT_NE(std::string(e.what()).find("m.safetensors"), std::string::npos);
  }
}

TEST(Safetensors, CApiReportsFormatErrorsWithoutThrowing) {
  TempDir dir;
  const fs::path path = dir.path() / "broken.safetensors";
  write_raw(path, "{oops", "");
  asd_tensor_map* map = nullptr;
  EXPECT_EQ(asd_safetensors_load(path.string().c_str(), ASD_DTYPE_AUTO, &map), ASD_ERR_FORMAT);
  EXPECT_EQ(map, nullptr) << "out-parameter written on failure";
  const std::string msg = asd_last_error();
  EXPECT_NE(msg.find("asd_safetensors_load"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;

  EXPECT_EQ(asd_safetensors_load(nullptr, ASD_DTYPE_AUTO, &map), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(asd_last_error()).find("path is NULL"), std::string::npos);

  // Round trip through the C API, with live-object accounting.
  int64_t live_before = 0, live_after = 0;
  ASSERT_EQ(asd_live_objects(&live_before), ASD_OK);
  ASSERT_EQ(asd_tensor_map_create(&map), ASD_OK);
  const float values[6] = {1, 2, 3, 4, 5, 6};
  const int64_t shape[2] = {2, 3};
  ASSERT_EQ(asd_tensor_map_set_f32(map, "w", values, shape, 2, ASD_DTYPE_BF16), ASD_OK);
  const fs::path out = dir.path() / "c.safetensors";
  ASSERT_EQ(asd_safetensors_save(map, out.string().c_str(), R"({"format":"pt"})"), ASD_OK) << asd_last_error();
  ASSERT_EQ(asd_tensor_map_free(map), ASD_OK);
  ASSERT_EQ(asd_safetensors_load(out.string().c_str(), ASD_DTYPE_F32, &map), ASD_OK) << asd_last_error();
  asd_dtype dtype{};
  int32_t ndim = 0;
  int64_t got_shape[4] = {};
  ASSERT_EQ(asd_tensor_map_info(map, "w", &dtype, &ndim, got_shape, 4), ASD_OK);
  EXPECT_EQ(dtype, ASD_DTYPE_F32);
  EXPECT_EQ(ndim, 2);
  EXPECT_EQ(got_shape[1], 3);
  float back[6] = {};
  ASSERT_EQ(asd_tensor_map_get_f32(map, "w", back, 6), ASD_OK);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back[i], values[i]);  // small integers are exact in bf16
  EXPECT_EQ(asd_tensor_map_get_f32(map, "w", back, 5), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(asd_tensor_map_info(map, "nope", &dtype, &ndim, nullptr, 0), ASD_ERR_NOT_FOUND);
  ASSERT_EQ(asd_tensor_map_free(map), ASD_OK);
  ASSERT_EQ(asd_live_objects(&live_after), ASD_OK);
  EXPECT_EQ(live_after, live_before);
}

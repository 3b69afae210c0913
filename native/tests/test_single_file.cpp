// Single-file Stable Diffusion checkpoints: the golden LDM-layout files (safetensors and PyTorch zip .ckpt) against
// their source cases, the architecture read from the weights, convert -> load, and malformed files (safetensors,
// zip and pickle fuzz cases built here by a tiny zip and pickle writer), each of which must give a clean error
// naming the file and the problem.
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "io/state_dict.h"
#include "io/weight_file.h"
#include "models/autoencoder_kl.h"
#include "models/clip_text.h"
#include "models/unet_2d_condition.h"
#include "pipeline/single_file.h"
#include "test_util.h"

namespace fs = std::filesystem;
namespace pl = asd::pipeline;
using asd::test::TempDir;

namespace {

std::string golden(const std::string& relative) { return asd::test::shared_path("golden/" + relative); }

struct Case {
  std::string name, unet, text;
};
const Case kSd1{"sd1_inpaint_tiny", "unet_sd1_inpaint_tiny", "clip_text_quickgelu_tiny"};
const Case kSd2{"sd2_inpaint_tiny", "unet_sd2_inpaint_tiny", "clip_text_gelu_tiny"};

/// A diffusers-layout config folder with the source cases' config.json files (the --model-config the tiny goldens need).
std::string config_dir(const TempDir& tmp, const Case& c) {
  const fs::path dir = tmp.path() / ("config-" + c.name);
  for (const auto& [sub, src] : {std::pair<std::string, std::string>{"unet", c.unet}, {"vae", "vae_tiny"}, {"text_encoder", c.text}}) {
    fs::create_directories(dir / sub);
    fs::copy_file(golden(src + "/config.json"), dir / sub / "config.json", fs::copy_options::overwrite_existing);
  }
  return dir.string();
}

void expect_equal_state(const torch::nn::Module& a, const torch::nn::Module& b, const std::string& what) {
  const asd::TensorMap sa = asd::state_dict(a), sb = asd::state_dict(b);
  ASSERT_EQ(sa.size(), sb.size()) << what;
  for (size_t i = 0; i < sa.size(); ++i) {
    const torch::Tensor* other = sb.find(sa.names()[i]);
    ASSERT_NE(other, nullptr) << what << ": " << sa.names()[i];
    EXPECT_TRUE(torch::equal(sa.tensor(i), *other)) << what << ": " << sa.names()[i] << " differs from the source case";
  }
}

void check_golden_file(const Case& c, const std::string& file_name) {
  torch::NoGradGuard no_grad;
  TempDir tmp;
  const std::string file = golden("single_file/" + c.name + "/" + file_name);
  const nlohmann::json sources = asd::JsonConfig::load(golden("single_file/" + c.name + "/sources.json")).json();
  EXPECT_EQ(static_cast<int64_t>(asd::WeightFile::open(file)->tensors().size()), sources.at("keys").get<int64_t>()) << file;

  pl::SingleFileOptions options;
  options.config_dir = config_dir(tmp, c);
  pl::SdComponents m = pl::load_single_file(file, options, torch::kFloat32);

  // Every weight equals the source case's tensor.
  auto unet = asd::models::load_unet(golden(c.unet + "/config.json"), golden(c.unet + "/weights.safetensors"));
  auto vae = asd::models::load_vae(golden("vae_tiny/config.json"), golden("vae_tiny/weights.safetensors"));
  asd::ClipTextModel text(asd::ClipTextConfig::load(golden(c.text + "/config.json")));
  asd::load_clip_text(*text, asd::safetensors::load(golden(c.text + "/weights.safetensors")));
  expect_equal_state(*m.unet, *unet, file + " UNet");
  expect_equal_state(*m.vae, *vae, file + " VAE");
  expect_equal_state(*m.text_encoder, *text, file + " text encoder");

  // ... and the modules built from the file reproduce the source cases' outputs.
  const asd::TensorMap uio = asd::safetensors::load(golden(c.unet + "/io.safetensors"));
  const double e_unet = asd::test::max_abs_error(m.unet->forward(uio.at("sample"), uio.at("timestep"), uio.at("encoder_hidden_states")), uio.at("out"));
  const asd::TensorMap vio = asd::safetensors::load(golden("vae_tiny/io.safetensors"));
  const auto [mean, logvar] = m.vae->encode(vio.at("image"));
  const double e_mean = asd::test::max_abs_error(mean, vio.at("posterior_mean"));
  const double e_dec = asd::test::max_abs_error(m.vae->decode(vio.at("latents")), vio.at("decoded"));
  const asd::TensorMap tio = asd::safetensors::load(golden(c.text + "/io.safetensors"));
  const double e_text = asd::test::max_abs_error(m.text_encoder->forward(tio.at("input_ids")), tio.at("last_hidden_state"));
  std::cout << "  [" << c.name << "/" << file_name << "] max abs error: unet " << e_unet << ", vae mean " << e_mean << ", decoded " << e_dec
            << ", text " << e_text << "; " << m.single_file.at("description").get<std::string>() << ", skipped "
            << m.single_file.at("skipped_keys") << " keys\n";
  EXPECT_LE(e_unet, 1e-4);
  EXPECT_LE(e_mean, 1e-4);
  EXPECT_LE(e_dec, 1e-4);
  EXPECT_LE(e_text, 1e-4);
  const bool sd2 = c.name == "sd2_inpaint_tiny";
  EXPECT_EQ(m.single_file.at("family"), sd2 ? "SD 2.x" : "SD 1.x");
  EXPECT_EQ(m.single_file.at("tokenizer_pad_token"), sd2 ? "!" : "<|endoftext|>");
  // betas, alphas_cumprod, model_ema.decay, model_ema.num_updates; SD 2.x: text_projection, logit_scale and the
  // last residual block (16 tensors).
  EXPECT_EQ(m.single_file.at("skipped_keys").get<int64_t>(), sd2 ? 4 + 2 + 12 : 4);
}

/// Runs `f` and expects asd::Error with `status` and a message containing every one of `parts`.
void expect_error(const std::function<void()>& f, asd_status status, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << parts.front() << "'";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  }
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// ---------------------------------------------------------------------------------------------- a tiny pickle writer
/// Pickle opcodes as torch.save (protocol 2) writes them.
struct Pickle {
  std::string b;
  Pickle& op(uint8_t c) {
    b.push_back(static_cast<char>(c));
    return *this;
  }
  Pickle& str(const std::string& s) {  // BINUNICODE
    op('X');
    u32(static_cast<uint32_t>(s.size()));
    b += s;
    return *this;
  }
  Pickle& integer(int32_t v) {  // BININT
    op('J');
    u32(static_cast<uint32_t>(v));
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    op('c');
    b += module + "\n" + name + "\n";
    return *this;
  }
  Pickle& u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    return *this;
  }
  Pickle& ints(const std::vector<int64_t>& v) {  // a tuple of ints
    op('(');
    for (int64_t x : v) {
      if (x > INT32_MAX) {  // LONG1, 8 bytes
        op(0x8a).op(8);
        for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>((static_cast<uint64_t>(x) >> (8 * i)) & 0xFF));
      } else {
        integer(static_cast<int32_t>(x));
      }
    }
    return op('t');
  }
};

struct TensorSpec {
  std::string name, storage_type = "FloatStorage", key;
  int64_t numel = 0, offset = 0;
  std::vector<int64_t> sizes, strides;
};

/// _rebuild_tensor_v2(persistent storage, offset, sizes, strides, False, OrderedDict())
void put_tensor(Pickle& p, const TensorSpec& t) {
  p.global("torch._utils", "_rebuild_tensor_v2").op('(');
  p.op('(').str("storage").global("torch", t.storage_type).str(t.key).str("cpu").integer(static_cast<int32_t>(t.numel)).op('t').op('Q');
  p.integer(static_cast<int32_t>(t.offset)).ints(t.sizes).ints(t.strides).op(0x89);
  p.global("collections", "OrderedDict").op(')').op('R');
  p.op('t').op('R');
}

/// {"state_dict": {name: tensor, ...}} with protocol 2 framing; `body` may replace the tensors.
std::string state_dict_pickle(const std::vector<TensorSpec>& tensors, const std::function<void(Pickle&)>& extra = {}) {
  Pickle p;
  p.op(0x80).op(2).op('}').str("state_dict").op('}').op('(');
  for (const auto& t : tensors) {
    p.str(t.name);
    put_tensor(p, t);
  }
  if (extra) extra(p);
  p.op('u').op('s').op('.');
  return p.b;
}

// ------------------------------------------------------------------------------------------------- a tiny zip writer
struct ZipEntry {
  std::string name, data;
  uint16_t method = 0;
};

void put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xFF));
  s.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

/// A stored zip archive (no CRC: the reader does not check it, PyTorch's writer does write one).
std::string zip(const std::vector<ZipEntry>& entries) {
  std::string out, cd;
  for (const auto& e : entries) {
    const uint32_t local = static_cast<uint32_t>(out.size());
    put32(out, 0x04034b50);
    put16(out, 20);
    put16(out, 0);
    put16(out, e.method);
    put16(out, 0);
    put16(out, 0);
    put32(out, 0);
    put32(out, static_cast<uint32_t>(e.data.size()));
    put32(out, static_cast<uint32_t>(e.data.size()));
    put16(out, static_cast<uint16_t>(e.name.size()));
    put16(out, 0);
    out += e.name + e.data;
    put32(cd, 0x02014b50);
    put16(cd, 20);
    put16(cd, 20);
    put16(cd, 0);
    put16(cd, e.method);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, static_cast<uint32_t>(e.data.size()));
    put32(cd, static_cast<uint32_t>(e.data.size()));
    put16(cd, static_cast<uint16_t>(e.name.size()));
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, local);
    cd += e.name;
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += cd;
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, static_cast<uint16_t>(entries.size()));
  put16(out, static_cast<uint16_t>(entries.size()));
  put32(out, static_cast<uint32_t>(cd.size()));
  put32(out, cd_offset);
  put16(out, 0);
  return out;
}

std::string floats(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)); }

/// A valid two-tensor checkpoint: a = [[0,1,2],[3,4,5]] (storage 0), b = [10, 11] (storage 1, from element 1).
const std::vector<TensorSpec> kTensors = {{"a", "FloatStorage", "0", 6, 0, {2, 3}, {3, 1}}, {"b", "FloatStorage", "1", 3, 1, {2}, {1}}};
std::vector<ZipEntry> ckpt_entries(const std::string& pickle) {
  return {{"archive/data.pkl", pickle}, {"archive/byteorder", "little"}, {"archive/data/0", floats({0, 1, 2, 3, 4, 5})},
          {"archive/data/1", floats({9, 10, 11})}, {"archive/version", "3\n"}};
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------ golden
TEST(SingleFileGolden, Sd1Safetensors) { check_golden_file(kSd1, "model.safetensors"); }
TEST(SingleFileGolden, Sd1Ckpt) { check_golden_file(kSd1, "model.ckpt"); }
TEST(SingleFileGolden, Sd2Safetensors) { check_golden_file(kSd2, "model.safetensors"); }
TEST(SingleFileGolden, Sd2Ckpt) { check_golden_file(kSd2, "model.ckpt"); }

TEST(SingleFileGolden, CkptAndSafetensorsHoldTheSameTensors) {
  for (const Case& c : {kSd1, kSd2}) {
    const auto st = asd::WeightFile::open(golden("single_file/" + c.name + "/model.safetensors"));
    const auto ck = asd::WeightFile::open(golden("single_file/" + c.name + "/model.ckpt"));
    ASSERT_EQ(st->tensors().size(), ck->tensors().size());
    for (size_t i = 0; i < st->tensors().size(); ++i) {
      const torch::Tensor* other = ck->tensors().find(st->tensors().names()[i]);
      ASSERT_NE(other, nullptr) << st->tensors().names()[i];
      EXPECT_TRUE(torch::equal(st->tensors().tensor(i), *other)) << st->tensors().names()[i];
    }
  }
}

TEST(SingleFileGolden, TinyFilesNeedTheirConfigs) {
  // The tiny text encoders are 32 wide: no standard head count fits, and the message says what to do.
  expect_error([] { pl::load_single_file(golden("single_file/sd2_inpaint_tiny/model.safetensors"), {}, torch::kFloat32); }, ASD_ERR_UNSUPPORTED,
               {"model.safetensors", "--model-config"});
}

// ------------------------------------------------------------------------------------ the architecture from the weights
namespace {
/// An SD-convention model (norm groups 32, SD's head rule) small enough for a test, with fresh weights.
pl::SdComponents sd_like(asd::ldm::Family family, int64_t vocab = 1000) {
  torch::manual_seed(7);
  const bool sd2 = family == asd::ldm::Family::kSd2;
  pl::SdComponents c;
  c.unet_config = {{"in_channels", 9}, {"out_channels", 4}, {"block_out_channels", {64, 128}}, {"layers_per_block", 1},
                   {"down_block_types", {"CrossAttnDownBlock2D", "DownBlock2D"}}, {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D"}},
                   {"attention_head_dim", sd2 ? nlohmann::json{1, 2} : nlohmann::json(8)}, {"cross_attention_dim", 64},
                   {"use_linear_projection", sd2}, {"norm_num_groups", 32}};
  c.vae_config = {{"block_out_channels", {32, 64}}, {"layers_per_block", 1}, {"latent_channels", 4}, {"norm_num_groups", 32},
                  {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D"}}, {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D"}},
                  {"scaling_factor", 0.18215}};
  c.text_encoder_config = {{"vocab_size", vocab}, {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 2},
                           {"num_attention_heads", 1}, {"max_position_embeddings", 77}, {"hidden_act", sd2 ? "gelu" : "quick_gelu"}};
  c.scheduler_config = pl::compact_scheduler_config();
  c.unet = asd::models::unet_from_config(asd::JsonConfig(c.unet_config, "test unet"));
  c.vae = asd::models::vae_from_config(asd::JsonConfig(c.vae_config, "test vae"));
  c.text_encoder = asd::ClipTextModel(asd::ClipTextConfig::from_json(asd::JsonConfig(c.text_encoder_config, "test text")));
  c.scheduler = asd::schedulers::DDIMSchedulerConfig::from_json(asd::JsonConfig(c.scheduler_config, "test scheduler"));
  c.scaling_factor = 0.18215;
  return c;
}
}  // namespace

TEST(SingleFileDetect, ArchitectureReadFromTheWeights) {
  torch::NoGradGuard no_grad;
  for (const auto family : {asd::ldm::Family::kSd1, asd::ldm::Family::kSd2}) {
    TempDir tmp;
    const pl::SdComponents original = sd_like(family);
    const std::string file = (tmp.path() / "model.safetensors").string();
    pl::save_single_file(original, file, family);
    const pl::SdComponents loaded = pl::load_single_file(file, {}, std::nullopt);
    const bool sd2 = family == asd::ldm::Family::kSd2;
    EXPECT_EQ(loaded.unet_config.at("block_out_channels"), original.unet_config.at("block_out_channels"));
    EXPECT_EQ(loaded.unet_config.at("layers_per_block"), 1);
    EXPECT_EQ(loaded.unet_config.at("down_block_types"), original.unet_config.at("down_block_types"));
    EXPECT_EQ(loaded.unet_config.at("up_block_types"), original.unet_config.at("up_block_types"));
    EXPECT_EQ(loaded.unet_config.at("use_linear_projection"), sd2);
    EXPECT_EQ(loaded.unet_config.at("attention_head_dim"), original.unet_config.at("attention_head_dim"));
    EXPECT_EQ(loaded.unet_config.at("cross_attention_dim"), 64);
    EXPECT_EQ(loaded.vae_config.at("block_out_channels"), original.vae_config.at("block_out_channels"));
    EXPECT_EQ(loaded.text_encoder_config.at("num_hidden_layers"), 2);  // SD 2.x: 3 blocks in the file, the last unused
    EXPECT_EQ(loaded.text_encoder_config.at("hidden_act"), sd2 ? "gelu" : "quick_gelu");
    EXPECT_EQ(loaded.text_encoder_config.at("vocab_size"), 1000);
    EXPECT_EQ(loaded.scheduler_config.at("prediction_type"), "epsilon");
    EXPECT_EQ(loaded.scheduler_config.at("beta_schedule"), "scaled_linear");
    EXPECT_EQ(loaded.dtype, torch::kFloat32);
    expect_equal_state(*loaded.unet, *original.unet, "UNet");
    expect_equal_state(*loaded.vae, *original.vae, "VAE");
    expect_equal_state(*loaded.text_encoder, *original.text_encoder, "text encoder");
    const std::string description = loaded.single_file.at("description");
    EXPECT_EQ(description.rfind(sd2 ? "SD 2.x inpainting, UNet " : "SD 1.x inpainting, UNet ", 0), 0u) << description;
    EXPECT_NE(description.find("fp32"), std::string::npos) << description;

    // --prediction-type overrides; the target dtype converts once (fp32 file -> bf16 parameters).
    pl::SingleFileOptions v;
    v.prediction_type = "v_prediction";
    const pl::SdComponents bf16 = pl::load_single_file(file, v, torch::kBFloat16);
    EXPECT_EQ(bf16.scheduler_config.at("prediction_type"), "v_prediction");
    EXPECT_EQ(bf16.unet->parameters()[0].scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(bf16.unet->parameters()[0], original.unet->parameters()[0].to(torch::kBFloat16)));
  }
}

TEST(SingleFileDetect, MissingAndMisShapedWeightsNameTheKey) {
  TempDir tmp;
  const pl::SdComponents original = sd_like(asd::ldm::Family::kSd1);
  const std::string file = (tmp.path() / "m.safetensors").string();
  pl::save_single_file(original, file, asd::ldm::Family::kSd1);
  asd::TensorMap m = asd::safetensors::load(file);
  const std::string victim = "model.diffusion_model.output_blocks.1.0.skip_connection.weight";
  ASSERT_TRUE(m.contains(victim));
  asd::TensorMap without;
  for (size_t i = 0; i < m.size(); ++i) {
    if (m.names()[i] != victim) without.set(m.names()[i], m.tensor(i));
  }
  const std::string missing = (tmp.path() / "missing.safetensors").string();
  asd::safetensors::save(missing, without);
  expect_error([&] { pl::load_single_file(missing, {}, torch::kFloat32); }, ASD_ERR_NOT_FOUND, {"missing.safetensors", victim, "up_blocks.0.resnets.1.conv_shortcut.weight"});

  m.set(victim, torch::zeros({3, 3, 1, 1}));
  const std::string bad = (tmp.path() / "misshaped.safetensors").string();
  asd::safetensors::save(bad, m);
  expect_error([&] { pl::load_single_file(bad, {}, torch::kFloat32); }, ASD_ERR_FORMAT, {"misshaped.safetensors", victim, "has shape [3, 3, 1, 1]"});

  m = asd::safetensors::load(file);
  m.set("model.diffusion_model.label_emb.0.0.weight", torch::zeros({4, 4}));
  const std::string sdxl = (tmp.path() / "label.safetensors").string();
  asd::safetensors::save(sdxl, m);
  expect_error([&] { pl::load_single_file(sdxl, {}, torch::kFloat32); }, ASD_ERR_UNSUPPORTED, {"label.safetensors", "class or size embeddings"});

  m = asd::safetensors::load(file);
  m.set("first_stage_model.encoder.extra.weight", torch::zeros({4}));
  const std::string extra = (tmp.path() / "extra.safetensors").string();
  asd::safetensors::save(extra, m);
  expect_error([&] { pl::load_single_file(extra, {}, torch::kFloat32); }, ASD_ERR_FORMAT, {"extra.safetensors", "unexpected weight 'first_stage_model.encoder.extra.weight'"});
}

// ------------------------------------------------------------------------------------------------------------ convert
TEST(SingleFileConvert, ConvertThenLoadGivesTheSameTensorsInTheFilesDtype) {
  torch::NoGradGuard no_grad;
  TempDir tmp;
  for (const torch::ScalarType dtype : {torch::kFloat32, torch::kFloat16}) {
    pl::SdComponents original = sd_like(asd::ldm::Family::kSd2);
    original.to(torch::kCPU, dtype);
    const std::string file = (tmp.path() / (std::string("m-") + c10::toString(dtype) + ".safetensors")).string();
    pl::save_single_file(original, file, asd::ldm::Family::kSd2);
    const fs::path out = tmp.path() / (std::string("out-") + c10::toString(dtype));
    const std::string description = pl::convert_single_file(file, {}, out.string(), golden("tokenizer_clip"));
    EXPECT_NE(description.find(dtype == torch::kFloat16 ? "fp16" : "fp32"), std::string::npos) << description;
    for (const char* f : {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                          "text_encoder/model.safetensors", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"}) {
      EXPECT_TRUE(fs::exists(out / f)) << f;
    }
    EXPECT_EQ(asd::JsonConfig::load((out / "tokenizer/tokenizer_config.json").string()).json().at("pad_token"), "!");
    EXPECT_EQ(asd::safetensors::load((out / "unet/diffusion_pytorch_model.safetensors").string()).tensor(0).scalar_type(), dtype);
    const pl::SdComponents folder = pl::load_diffusers_folder(out.string(), dtype);
    const pl::SdComponents single = pl::load_single_file(file, {}, std::nullopt);
    EXPECT_EQ(single.dtype, dtype);
    expect_equal_state(*folder.unet, *single.unet, "UNet");
    expect_equal_state(*folder.vae, *single.vae, "VAE");
    expect_equal_state(*folder.text_encoder, *single.text_encoder, "text encoder");
    expect_equal_state(*folder.unet, *original.unet, "UNet vs the written model");

    // Converting again into its own output replaces it; a foreign non-empty folder is refused and left alone.
    EXPECT_NO_THROW(pl::convert_single_file(file, {}, out.string(), golden("tokenizer_clip")));
  }
  const fs::path foreign = tmp.path() / "foreign";
  fs::create_directories(foreign);
  write_bytes(foreign / "notes.txt", "mine");
  const std::string file = (tmp.path() / "m-Float.safetensors").string();
  expect_error([&] { pl::convert_single_file(file, {}, foreign.string(), golden("tokenizer_clip")); }, ASD_ERR_INVALID_ARGUMENT, {"foreign", "not empty"});
  EXPECT_EQ(read_bytes((foreign / "notes.txt").string()), "mine");
  expect_error([&] { pl::convert_single_file(file, {}, (tmp.path() / "no-tok").string(), (tmp.path() / "nowhere").string()); }, ASD_ERR_IO,
               {"vocab.json"});
  // A convert that fails on a malformed file leaves nothing behind: no output, no staging folder.
  const fs::path broken = tmp.path() / "broken.safetensors";
  write_bytes(broken, read_bytes(file).substr(0, 1000));
  const fs::path target = tmp.path() / "from-broken";
  expect_error([&] { pl::convert_single_file(broken.string(), {}, target.string(), golden("tokenizer_clip")); }, ASD_ERR_FORMAT, {"broken.safetensors"});
  EXPECT_FALSE(fs::exists(target));
  for (const auto& e : fs::directory_iterator(tmp.path())) EXPECT_EQ(e.path().filename().string().find(".staging-"), std::string::npos) << e.path();
}

TEST(SingleFileConvert, GoldenCkptConvertsWithItsConfigs) {
  TempDir tmp;
  pl::SingleFileOptions o;
  o.config_dir = config_dir(tmp, kSd2);
  const fs::path out = tmp.path() / "sd2";
  pl::convert_single_file(golden("single_file/sd2_inpaint_tiny/model.ckpt"), o, out.string(), golden("tokenizer_clip"));
  const pl::SdComponents folder = pl::load_diffusers_folder(out.string());
  auto unet = asd::models::load_unet(golden("unet_sd2_inpaint_tiny/config.json"), golden("unet_sd2_inpaint_tiny/weights.safetensors"));
  expect_equal_state(*folder.unet, *unet, "UNet");
}

// --------------------------------------------------------------------------------------------------------------- fuzz
namespace {
/// Writes `bytes` to a file named after the case and expects opening it to fail with `status` and `parts`.
void fuzz(const TempDir& tmp, const std::string& name, const std::string& bytes, asd_status status, const std::vector<std::string>& parts) {
  SCOPED_TRACE(name);
  const fs::path path = tmp.path() / (name + ".bin");
  write_bytes(path, bytes);
  std::vector<std::string> all = parts;
  all.push_back(path.filename().string());
  expect_error([&] { asd::WeightFile::open(path.string()); }, status, all);
}

std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  return out + header + data;
}
}  // namespace

TEST(SingleFileFuzz, ValidFixturesLoad) {
  TempDir tmp;
  write_bytes(tmp.path() / "ok.ckpt", zip(ckpt_entries(state_dict_pickle(kTensors))));
  const auto w = asd::WeightFile::open((tmp.path() / "ok.ckpt").string());
  ASSERT_EQ(w->tensors().size(), 2u);
  EXPECT_TRUE(torch::equal(w->tensors().at("a"), torch::arange(6, torch::kFloat32).reshape({2, 3})));
  EXPECT_TRUE(torch::equal(w->tensors().at("b"), torch::tensor({10.f, 11.f})));
  // A bare state dict (no "state_dict" wrapper) loads too.
  Pickle p;
  p.op(0x80).op(2).op('}').op('(');
  p.str("a");
  put_tensor(p, kTensors[0]);
  p.op('u').op('.');
  write_bytes(tmp.path() / "bare.ckpt", zip(ckpt_entries(p.b)));
  EXPECT_TRUE(torch::equal(asd::WeightFile::open((tmp.path() / "bare.ckpt").string())->tensors().at("a"), torch::arange(6, torch::kFloat32).reshape({2, 3})));
  write_bytes(tmp.path() / "ok.safetensors", safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", floats({1, 2})));
  EXPECT_TRUE(torch::equal(asd::WeightFile::open((tmp.path() / "ok.safetensors").string())->tensors().at("x"), torch::tensor({1.f, 2.f})));
}

TEST(SingleFileFuzz, MalformedSafetensors) {
  TempDir tmp;
  const std::string ok = safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", floats({1, 2}));
  fuzz(tmp, "st-truncated-data", ok.substr(0, ok.size() - 3), ASD_ERR_FORMAT, {"run past the data section"});
  fuzz(tmp, "st-truncated-header", ok.substr(0, 20), ASD_ERR_FORMAT, {"runs past the end of the file"});
  fuzz(tmp, "st-shorter-than-length", ok.substr(0, 5), ASD_ERR_FORMAT, {"shorter than the 8-byte header length"});
  fuzz(tmp, "st-header-too-long", std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + "{}", ASD_ERR_FORMAT, {"exceeds"});
  fuzz(tmp, "st-offset-out-of-range", safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", floats({1, 2})),
       ASD_ERR_FORMAT, {"run past the data section"});
  fuzz(tmp, "st-offsets-reversed", safetensors_bytes(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", floats({1, 2})), ASD_ERR_FORMAT,
       {"begin 8 > end 0"});
  fuzz(tmp, "st-huge-dimensions",
       safetensors_bytes(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", floats({1, 2})), ASD_ERR_FORMAT,
       {"overflows 64 bits"});
  fuzz(tmp, "st-overlapping",
       safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", floats({1, 2})),
       ASD_ERR_FORMAT, {"overlap"});
  fuzz(tmp, "st-size-mismatch", safetensors_bytes(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", floats({1, 2})), ASD_ERR_FORMAT,
       {"12 bytes but data_offsets span 8"});
  fuzz(tmp, "st-not-json", safetensors_bytes(R"({"x":{"dtype":)", floats({1, 2})), ASD_ERR_FORMAT, {"not valid JSON"});
  fuzz(tmp, "st-unknown-dtype", safetensors_bytes(R"({"x":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", floats({1, 2})), ASD_ERR_FORMAT,
       {"unknown dtype 'F12'"});
  fuzz(tmp, "st-duplicate-name",
       safetensors_bytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", floats({1, 2})),
       ASD_ERR_FORMAT, {"appears twice"});
}

TEST(SingleFileFuzz, MalformedZipArchives) {
  TempDir tmp;
  const std::string pkl = state_dict_pickle(kTensors);
  const std::string ok = zip(ckpt_entries(pkl));
  fuzz(tmp, "zip-truncated", ok.substr(0, ok.size() / 2), ASD_ERR_FORMAT, {"no end-of-central-directory record"});
  // The end record's central-directory offset points past the end of the file.
  std::string cd_out = ok.substr(0, ok.size() - 6);
  {
    std::string tail;
    put32(tail, static_cast<uint32_t>(ok.size() + 100));
    put16(tail, 0);
    cd_out += tail;
  }
  fuzz(tmp, "zip-central-directory-out-of-range", cd_out, ASD_ERR_FORMAT, {"runs past the end of the file"});
  auto entries = ckpt_entries(pkl);
  entries.erase(entries.begin() + 3);  // archive/data/1
  fuzz(tmp, "zip-missing-storage-entry", zip(entries), ASD_ERR_FORMAT, {"storage '1' has no zip entry 'archive/data/1'"});
  entries = ckpt_entries(pkl);
  entries[2].method = 8;
  fuzz(tmp, "zip-deflated-entry", zip(entries), ASD_ERR_UNSUPPORTED, {"'archive/data/0' is deflated"});
  entries = ckpt_entries(pkl);
  entries.erase(entries.begin());
  fuzz(tmp, "zip-no-data-pkl", zip(entries), ASD_ERR_FORMAT, {"no <name>/data.pkl"});
  entries = ckpt_entries(pkl);
  entries.push_back(entries[2]);
  fuzz(tmp, "zip-duplicate-entry", zip(entries), ASD_ERR_FORMAT, {"'archive/data/0' appears twice"});
  {
    // Two central-directory records pointing at the same local header: overlapping entries.
    std::string z = zip({{"archive/data/0", floats({1, 2})}, {"archive/data/1", floats({3, 4})}});
    const size_t second = z.rfind(std::string("\x50\x4b\x01\x02", 4));
    z.replace(second + 42, 4, std::string(4, '\0'));
    fuzz(tmp, "zip-overlapping-entries", z, ASD_ERR_FORMAT, {"overlap"});
  }
  {
    // An entry whose stored size runs past the end of the file.
    std::string z = ok;
    const size_t cd = z.find(std::string("\x50\x4b\x01\x02", 4));
    std::string huge;
    put32(huge, 0x7fffffff);
    z.replace(cd + 20, 4, huge);
    z.replace(cd + 24, 4, huge);
    fuzz(tmp, "zip-entry-past-end", z, ASD_ERR_FORMAT, {"runs past the end of the file"});
  }
  entries = ckpt_entries(pkl);
  entries[1].data = "big";
  fuzz(tmp, "zip-big-endian", zip(entries), ASD_ERR_UNSUPPORTED, {"big-endian"});
}

TEST(SingleFileFuzz, PickleAbuseIsRefusedWithoutExecutingAnything) {
  TempDir tmp;
  auto with_pickle = [](const std::string& pkl) { return zip(ckpt_entries(pkl)); };
  // Disallowed globals, named in the message: the classic payloads.
  {
    Pickle p;
    p.op(0x80).op(2).global("os", "system").str("touch /tmp/asd-pwned").op(0x85).op('R').op('.');
    fuzz(tmp, "pickle-os-system", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"'os.system'", "Nothing was executed"});
    EXPECT_FALSE(fs::exists("/tmp/asd-pwned"));
  }
  {
    Pickle p;
    p.op(0x80).op(2).global("builtins", "eval").str("1+1").op(0x85).op('R').op('.');
    fuzz(tmp, "pickle-builtins-eval", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"'builtins.eval'"});
  }
  {
    Pickle p;  // protocol 4 spelling of a global
    p.op(0x80).op(4).op(0x8c).op(10);
    p.b += "subprocess";
    p.op(0x8c).op(5);
    p.b += "Popen";
    p.op(0x93).op('.');
    fuzz(tmp, "pickle-stack-global-subprocess", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"'subprocess.Popen'"});
  }
  {
    Pickle p;  // REDUCE on an allowed global that is not an allowed callable
    p.op(0x80).op(2).global("torch", "FloatStorage").op(')').op('R').op('.');
    fuzz(tmp, "pickle-reduce-storage-type", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"REDUCE calls 'torch.FloatStorage'"});
  }
  {
    Pickle p;  // REDUCE on a string
    p.op(0x80).op(2).str("os.system").op(')').op('R').op('.');
    fuzz(tmp, "pickle-reduce-non-callable", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"REDUCE on a value that is not a callable global"});
  }
  {
    Pickle p;  // 100,000 nested lists
    p.op(0x80).op(2);
    for (int i = 0; i < 100000; ++i) p.op(']');
    for (int i = 0; i < 99999; ++i) p.op('a');
    p.op('.');
    fuzz(tmp, "pickle-deep-nesting", with_pickle(p.b), ASD_ERR_FORMAT, {"nesting deeper than 64 levels"});
  }
  {
    Pickle p;
    p.op(0x80).op(2).op(0xff).op('.');
    fuzz(tmp, "pickle-unknown-opcode", with_pickle(p.b), ASD_ERR_FORMAT, {"unknown opcode 0xff"});
  }
  {
    Pickle p;
    p.op(0x80).op(2).op('}').op('q').op(0).op('h').op(7).op('.');
    fuzz(tmp, "pickle-memo-out-of-range", with_pickle(p.b), ASD_ERR_FORMAT, {"memo index 7 is not defined"});
  }
  {
    Pickle p;  // INST: the protocol-0 way to build an object
    p.op(0x80).op(2).op('(').op('i');
    p.b += "os\nsystem\n";
    p.op('.');
    fuzz(tmp, "pickle-inst-opcode", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"the opcode INST"});
  }
  {
    Pickle p;
    p.op(0x80).op(2).op('R').op('.');
    fuzz(tmp, "pickle-stack-underflow", with_pickle(p.b), ASD_ERR_FORMAT, {"stack underflow"});
  }
  {
    const std::string pkl = state_dict_pickle(kTensors);
    fuzz(tmp, "pickle-truncated", with_pickle(pkl.substr(0, pkl.size() / 2)), ASD_ERR_FORMAT, {"truncated"});
  }
  {
    Pickle p;
    p.op(0x80).op(9).op('}').op('.');
    fuzz(tmp, "pickle-protocol-9", with_pickle(p.b), ASD_ERR_FORMAT, {"pickle protocol 9"});
  }
  {
    Pickle p;  // a persistent id that is not a storage record
    p.op(0x80).op(2).op('(').str("module").str("x").op('t').op('Q').op('.');
    fuzz(tmp, "pickle-bad-persistent-id", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"persistent id"});
  }
  {
    // A tensor with a backward hook: _rebuild_tensor_v2's hooks dict is not empty.
    Pickle p;
    p.op(0x80).op(2).op('}').op('(').str("a");
    p.global("torch._utils", "_rebuild_tensor_v2").op('(');
    p.op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(6).op('t').op('Q');
    p.integer(0).ints({6}).ints({1}).op(0x89);
    p.global("collections", "OrderedDict").op(')').op('R').str("hook").op('N').op('s');
    p.op('t').op('R').op('u').op('.');
    fuzz(tmp, "pickle-backward-hooks", with_pickle(p.b), ASD_ERR_UNSUPPORTED, {"backward hooks"});
  }
  {
    Pickle p;
    p.op(0x80).op(2).op(']').op('.');
    fuzz(tmp, "pickle-not-a-dict", with_pickle(p.b), ASD_ERR_FORMAT, {"no dict of tensors"});
  }
}

TEST(SingleFileFuzz, StoragesAndTensorsOutOfRange) {
  TempDir tmp;
  // Storage 0 declares 6 floats but its entry holds 3.
  auto entries = ckpt_entries(state_dict_pickle(kTensors));
  entries[2].data = floats({0, 1, 2});
  fuzz(tmp, "storage-shorter-than-declared", zip(entries), ASD_ERR_FORMAT, {"storage '0' declares 6 elements of 4 bytes but its entry holds 12 bytes"});
  // A tensor reaching past its storage: [2, 4] of a 6-element storage.
  auto t = kTensors;
  t[0].sizes = {2, 4};
  t[0].strides = {4, 1};
  fuzz(tmp, "tensor-past-storage", zip(ckpt_entries(state_dict_pickle(t))), ASD_ERR_FORMAT,
       {"tensor 'a' reaches element 7 of storage '0', which has 6 elements"});
  // An offset past the storage.
  t = kTensors;
  t[1].offset = 3;
  fuzz(tmp, "tensor-offset-past-storage", zip(ckpt_entries(state_dict_pickle(t))), ASD_ERR_FORMAT, {"tensor 'b' reaches element 4"});
  // Huge dimensions: sizes whose extent overflows 64 bits.
  t = kTensors;
  t[0].sizes = {int64_t{1} << 40, int64_t{1} << 40};
  t[0].strides = {int64_t{1} << 40, 1};
  fuzz(tmp, "tensor-huge-dimensions", zip(ckpt_entries(state_dict_pickle(t))), ASD_ERR_FORMAT, {"tensor 'a' has a shape or strides too large"});
  // A storage type that is not allowed.
  t = kTensors;
  t[0].storage_type = "UntypedStorage";
  fuzz(tmp, "storage-type-not-allowed", zip(ckpt_entries(state_dict_pickle(t))), ASD_ERR_UNSUPPORTED, {"'torch.UntypedStorage'"});
  // The legacy (pre-1.6) format: a raw pickle stream.
  fuzz(tmp, "legacy-format", state_dict_pickle(kTensors), ASD_ERR_UNSUPPORTED, {"legacy (pre-1.6, non-zip) format", "torch.save(torch.load("});
  // Not a weights file at all.
  fuzz(tmp, "not-a-weights-file", "hello, world", ASD_ERR_FORMAT, {"safetensors"});
}

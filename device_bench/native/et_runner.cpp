// mobilelwt's ExecuTorch runner: times a .pte the way executor_runner does, and prints the same log lines
// ("Model loaded in X ms.", "Iteration i of n: X ms", "Model executed successfully N time(s) in X ms.",
// "ETDump written to file 'P'."), so device_bench reads both alike. Unlike executor_runner, the event tracer
// is attached only when --etdump_path is given: timed runs are never traced.
//
// Build (host):   python -m device_bench.native OUT        (g++ against the executorch wheel's headers and libs)
// Build (phone):  the same file with the NDK's clang++ against an ExecuTorch build for the phone's ABI
//                 (libexecutorch, libexecutorch_etdump, the XNNPACK backend and the optimized kernels, whole-archive).

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <executorch/devtools/etdump/etdump_flatcc.h>
#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/runtime/core/exec_aten/exec_aten.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/log.h>
#include <executorch/runtime/platform/platform.h>
#include <executorch/runtime/platform/runtime.h>

// The wheel ships the threadpool library but not its header: the one call used here, declared.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

using executorch::aten::TensorImpl;
using executorch::extension::FileDataLoader;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::MethodMeta;
using executorch::runtime::Program;
using executorch::runtime::Result;
using executorch::runtime::Span;

struct Options {
  std::string model_path = "model.pte";
  std::string etdump_path;  // empty: no tracer
  uint32_t num_executions = 1;
  int cpu_threads = -1;
};

bool parse_args(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    auto eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      ET_LOG(Error, "Flag %s needs a value.", arg.c_str());
      return false;
    }
    if (arg == "--model_path") {
      options->model_path = value;
    } else if (arg == "--etdump_path") {
      options->etdump_path = value;
    } else if (arg == "--num_executions") {
      options->num_executions = static_cast<uint32_t>(std::strtoul(value.c_str(), nullptr, 10));
    } else if (arg == "--cpu_threads") {
      options->cpu_threads = std::atoi(value.c_str());
    } else {
      std::fprintf(stderr, "ERROR: unknown command line flag '%s'\n", arg.c_str() + 2);
      return false;
    }
  }
  return options->num_executions > 0;
}

double ms_since(et_timestamp_t start) {
  const auto ratio = et_pal_ticks_to_ns_multiplier();
  const auto ticks = executorch::runtime::pal_current_ticks() - start;
  return static_cast<double>(ticks) * ratio.numerator / ratio.denominator / 1e6;
}

// Every input tensor gets a buffer of ones (the timing does not depend on the values).
Error set_inputs(Method& method, const MethodMeta& meta, std::vector<std::vector<uint8_t>>* buffers) {
  for (size_t i = 0; i < meta.num_inputs(); ++i) {
    auto info = meta.input_tensor_meta(i);
    if (!info.ok()) {
      ET_LOG(Error, "Input %zu is not a tensor: this runner feeds tensors only.", i);
      return info.error();
    }
    buffers->emplace_back(info->nbytes());
    auto& bytes = buffers->back();
    if (info->scalar_type() == executorch::aten::ScalarType::Float) {
      auto* values = reinterpret_cast<float*>(bytes.data());
      for (size_t k = 0; k < bytes.size() / sizeof(float); ++k) {
        values[k] = 1.0f;
      }
    }
    TensorImpl impl(info->scalar_type(), info->sizes().size(),
                    const_cast<TensorImpl::SizesType*>(info->sizes().data()), bytes.data(),
                    const_cast<TensorImpl::DimOrderType*>(info->dim_order().data()));
    Error status = method.set_input(EValue(executorch::aten::Tensor(&impl)), i);
    if (status != Error::Ok) {
      ET_LOG(Error, "Setting input %zu failed with status 0x%" PRIx32, i, static_cast<uint32_t>(status));
      return status;
    }
  }
  return Error::Ok;
}

bool write_etdump(executorch::etdump::ETDumpGen& tracer, const std::string& path) {
  executorch::etdump::ETDumpResult result = tracer.get_etdump_data();
  if (result.buf == nullptr || result.size == 0) {
    ET_LOG(Error, "No ETDump data available!");
    return false;
  }
  const std::string temporary = path + ".partial";  // never a half-written ETDump under the asked name
  FILE* file = std::fopen(temporary.c_str(), "wb");
  bool written = file != nullptr && std::fwrite(result.buf, 1, result.size, file) == result.size;
  written = file != nullptr && std::fclose(file) == 0 && written;
  std::free(result.buf);
  if (!written || std::rename(temporary.c_str(), path.c_str()) != 0) {
    ET_LOG(Error, "Failed to write ETDump file at %s.", path.c_str());
    std::remove(temporary.c_str());
    return false;
  }
  ET_LOG(Info, "ETDump written to file '%s'.", path.c_str());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  executorch::runtime::runtime_init();
  Options options;
  if (!parse_args(argc, argv, &options)) {
    return 2;
  }
  if (options.cpu_threads > 0) {
    executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(options.cpu_threads);
  }
  const et_timestamp_t before_load = executorch::runtime::pal_current_ticks();
  Result<FileDataLoader> loader = FileDataLoader::from(options.model_path.c_str());
  if (!loader.ok()) {
    ET_LOG(Error, "Failed to open %s (status 0x%" PRIx32 ").", options.model_path.c_str(),
           static_cast<uint32_t>(loader.error()));
    return 1;
  }
  Result<Program> program = Program::load(&loader.get());
  if (!program.ok()) {
    ET_LOG(Error, "Failed to parse model file %s", options.model_path.c_str());
    return 1;
  }
  ET_LOG(Info, "Model file %s is loaded.", options.model_path.c_str());
  const char* method_name = *program->get_method_name(0);
  Result<MethodMeta> meta = program->method_meta(method_name);
  if (!meta.ok()) {
    ET_LOG(Error, "Failed to get method_meta for %s", method_name);
    return 1;
  }
  std::vector<std::unique_ptr<uint8_t[]>> planned;
  std::vector<Span<uint8_t>> spans;
  for (size_t id = 0; id < meta->num_memory_planned_buffers(); ++id) {
    const size_t size = static_cast<size_t>(meta->memory_planned_buffer_size(id).get());
    planned.push_back(std::make_unique<uint8_t[]>(size));
    spans.emplace_back(planned.back().get(), size);
  }
  HierarchicalAllocator planned_memory({spans.data(), spans.size()});
  static uint8_t method_pool[4 * 1024U * 1024U];
  static uint8_t temp_pool[1024U * 1024U];
  MemoryAllocator method_allocator(sizeof(method_pool), method_pool);
  MemoryAllocator temp_allocator(sizeof(temp_pool), temp_pool);
  MemoryManager memory(&method_allocator, &planned_memory, &temp_allocator);

  std::unique_ptr<executorch::etdump::ETDumpGen> tracer;
  if (!options.etdump_path.empty()) {
    tracer = std::make_unique<executorch::etdump::ETDumpGen>();
  }
  Result<Method> method = program->load_method(method_name, &memory, tracer.get());
  if (!method.ok()) {
    ET_LOG(Error, "In function main(), assert failed (method.ok()): Loading of method %s failed with status 0x%" PRIx32,
           method_name, static_cast<uint32_t>(method.error()));
    return 1;
  }
  ET_LOG(Info, "Model loaded in %f ms.", ms_since(before_load));
  std::vector<std::vector<uint8_t>> inputs;
  if (set_inputs(*method, *meta, &inputs) != Error::Ok) {
    return 1;
  }
  double total_ms = 0.0;
  for (uint32_t i = 1; i <= options.num_executions; ++i) {
    const et_timestamp_t start = executorch::runtime::pal_current_ticks();
    Error status = method->execute();
    const double elapsed = ms_since(start);
    if (status != Error::Ok) {
      ET_LOG(Error, "Execution of method %s failed with status 0x%" PRIx32, method_name,
             static_cast<uint32_t>(status));
      return 1;
    }
    total_ms += elapsed;
    ET_LOG(Info, "Iteration %" PRIu32 " of %" PRIu32 ": %f ms", i, options.num_executions, elapsed);
  }
  ET_LOG(Info, "Model executed successfully %" PRIu32 " time(s) in %f ms.", options.num_executions, total_ms);
  if (tracer && !write_etdump(*tracer, options.etdump_path)) {
    return 1;
  }
  return 0;
}

// edgeprune-runner: run an edgeprune TVM artifact (model.so, a Relax VM executable) once.
//
// Why it exists: checking an ARM artifact needs no Python on the target. edgeprune
// cross-compiles this file for aarch64 and runs it under qemu-user to compare the artifact's
// outputs with PyTorch; a lab engineer can build the same file natively on the board.
//
// Usage:   edgeprune-runner MODEL.so INPUT.bin D0,D1,...,Dn OUTPUT.bin
//   INPUT.bin   raw little-endian float32, C order, of the given shape
//   OUTPUT.bin  every output's raw bytes, one after the other, in output order
//   stdout      one line per output: "output <index> <dtype> <d0,d1,...>"
// Exit status: 0 on success, 2 on bad arguments or files, 1 when TVM raises.
//
// Only the tvm_ffi C++ API is used; libtvm_runtime.so must be loaded too (linked with
// --no-as-needed), because it registers the loader of the Relax VM executable.

#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr int kPooledAllocator = 2;  // the Relax VM's allocator kind, as Python's VirtualMachine uses
constexpr size_t kAlignment = 64;

// Host buffers for the input tensor, aligned as TVM's kernels expect.
struct AlignedCpuAlloc {
  void AllocData(DLTensor* tensor) {
    size_t bytes = ffi::GetDataSize(*tensor);
    bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    tensor->data = std::aligned_alloc(kAlignment, bytes == 0 ? kAlignment : bytes);
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

struct UsageError {
  std::string message;
};

std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    char* end = nullptr;
    long long value = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || value <= 0) throw UsageError{"bad shape: " + text};
    shape.push_back(value);
  }
  if (shape.empty()) throw UsageError{"empty shape"};
  return shape;
}

ffi::Tensor ReadInput(const std::string& path, const std::vector<int64_t>& shape) {
  ffi::Tensor input = ffi::Tensor::FromNDAlloc(AlignedCpuAlloc(),
                                               ffi::ShapeView(shape.data(), shape.size()),
                                               DLDataType{kDLFloat, 32, 1}, DLDevice{kDLCPU, 0});
  const size_t bytes = ffi::GetDataSize(input);
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw UsageError{"cannot open input " + path};
  if (static_cast<size_t>(file.tellg()) != bytes) {
    throw UsageError{"input " + path + " holds " + std::to_string(file.tellg()) +
                     " bytes; the shape needs " + std::to_string(bytes)};
  }
  file.seekg(0);
  file.read(static_cast<char*>(input.data_ptr()), static_cast<std::streamsize>(bytes));
  return input;
}

// A single-output model returns a tensor; others return a tuple (an ffi Array).
std::vector<ffi::Tensor> Flatten(const ffi::Any& result) {
  if (auto tensor = result.as<ffi::Tensor>()) return {*tensor};
  std::vector<ffi::Tensor> outputs;
  for (const ffi::Any& item : result.cast<ffi::Array<ffi::Any>>()) {
    outputs.push_back(item.cast<ffi::Tensor>());
  }
  return outputs;
}

void WriteOutputs(const std::vector<ffi::Tensor>& outputs, const std::string& path) {
  std::ofstream file(path, std::ios::binary);
  if (!file) throw UsageError{"cannot write " + path};
  for (size_t i = 0; i < outputs.size(); ++i) {
    const ffi::Tensor& out = outputs[i];
    if (!out.IsContiguous() || out.device().device_type != kDLCPU) {
      throw UsageError{"output " + std::to_string(i) + " is not a contiguous CPU tensor"};
    }
    std::cout << "output " << i << " " << ffi::DLDataTypeToString(out.dtype()) << " ";
    for (int32_t d = 0; d < out.ndim(); ++d) std::cout << (d ? "," : "") << out.shape()[d];
    std::cout << "\n";
    const size_t bytes = ffi::GetDataSize(out);
    file.write(static_cast<const char*>(out.data_ptr()) + out.byte_offset(),
               static_cast<std::streamsize>(bytes));
  }
  if (!file) throw UsageError{"short write to " + path};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: " << argv[0] << " MODEL.so INPUT.bin D0,D1,... OUTPUT.bin\n";
    return 2;
  }
  try {
    const std::vector<int64_t> shape = ParseShape(argv[3]);
    ffi::Tensor input = ReadInput(argv[2], shape);
    ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
    ffi::Function load = library->GetFunction("vm_load_executable", true).value();
    ffi::Module vm = load().cast<ffi::Module>();
    vm->GetFunction("vm_initialization", false).value()(static_cast<int>(kDLCPU), 0,
                                                         kPooledAllocator);
    ffi::Any result = vm->GetFunction("main", false).value()(input);
    WriteOutputs(Flatten(result), argv[4]);
  } catch (const UsageError& err) {
    std::cerr << "edgeprune-runner: " << err.message << "\n";
    return 2;
  } catch (const ffi::Error& err) {
    std::cerr << "edgeprune-runner: TVM error: " << err.what() << "\n";
    return 1;
  } catch (const std::exception& err) {
    std::cerr << "edgeprune-runner: " << err.what() << "\n";
    return 1;
  }
  return 0;
}

#include "transport/gpu/gpu_ipc.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>
#include <vector>

#include "core/log.hpp"
#include "memory/allocator.hpp"
#include "memory/cuda_rt.hpp"
#include "memory/device_copy.hpp"
#include "memory/vulkan_device.hpp"

namespace lf::gpu_ipc {

const char *api_name(Api a) noexcept { return a == Api::vulkan ? "Vulkan" : "CUDA"; }

std::optional<Api> api_of(MemoryKind k) noexcept {
  switch (k) {
    case MemoryKind::vulkan_device:
    case MemoryKind::vulkan_host_visible: return Api::vulkan;
    case MemoryKind::cuda_device: return Api::cuda;
    default: return std::nullopt;
  }
}

// ---- device identity ---------------------------------------------------------------

namespace {

std::string hex(const uint8_t *p, size_t n) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    s += b;
  }
  return s;
}

std::set<std::string> split(const std::string &list) {
  std::set<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.insert(item);
  return out;
}

#if LAVAFLOW_HAVE_VULKAN

Result<std::string> vulkan_identity() {
  // A throwaway instance: enumerating physical devices needs no logical
  // device, so no driver threads start in every process that calls lf_init.
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "lavaflow";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pApplicationInfo = &app;
  VkInstance inst = VK_NULL_HANDLE;
  LF_VK_CHECK(vkCreateInstance(&ici, nullptr, &inst));
  std::string ids;
  uint32_t count = 0;
  VkResult r = vkEnumeratePhysicalDevices(inst, &count, nullptr);
  std::vector<VkPhysicalDevice> pds(count);
  if (r == VK_SUCCESS) r = vkEnumeratePhysicalDevices(inst, &count, pds.data());
  for (uint32_t i = 0; r == VK_SUCCESS && i < count; ++i) {
    VkPhysicalDeviceIDProperties idp{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
    VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    p2.pNext = &idp;
    vkGetPhysicalDeviceProperties2(pds[i], &p2);
    // The same qualification as lf::vk::Device::create: 1.1 and OPAQUE_FD.
    if (p2.properties.apiVersion < VK_API_VERSION_1_1 ||
        !vk::has_device_extension(pds[i], VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME))
      continue;
    if (!ids.empty()) ids += ",";
    ids += hex(idp.deviceUUID, VK_UUID_SIZE) + "/" + hex(idp.driverUUID, VK_UUID_SIZE);
  }
  vkDestroyInstance(inst, nullptr);
  if (r != VK_SUCCESS) return std::unexpected(vk::vk_error(r, "vkEnumeratePhysicalDevices", __FILE__, __LINE__));
  if (ids.empty())
    return LF_FAIL(LF_ERR_UNAVAILABLE, "no Vulkan 1.1 device with %s", VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME);
  return ids;
}
#endif

#if LAVAFLOW_HAVE_CUDA
/// PCI bus ids ("0000:3b:00.0") of NVIDIA display/3D controllers, from sysfs.
/// Read instead of asking CUDA so that lf_init never initialises CUDA (which
/// starts driver threads and breaks a later fork); CUDA itself is only
/// touched when CUDA memory is allocated or arrives.
std::string nvidia_bus_ids() {
  std::string ids;
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) return ids;
  std::vector<std::string> found;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string dir = std::string("/sys/bus/pci/devices/") + e->d_name;
    unsigned vendor = 0, cls = 0;
    if (FILE *f = std::fopen((dir + "/vendor").c_str(), "r")) {
      if (std::fscanf(f, "%x", &vendor) != 1) vendor = 0;
      std::fclose(f);
    }
    if (FILE *f = std::fopen((dir + "/class").c_str(), "r")) {
      if (std::fscanf(f, "%x", &cls) != 1) cls = 0;
      std::fclose(f);
    }
    // 0x10de: NVIDIA; classes 0x03xxxx (display) and 0x12xxxx (accelerator).
    if (vendor == 0x10de && ((cls >> 16) == 0x03 || (cls >> 16) == 0x12)) found.push_back(e->d_name);
  }
  closedir(d);
  std::sort(found.begin(), found.end());
  for (const std::string &b : found) ids += (ids.empty() ? "" : ",") + b;
  return ids;
}

std::string cuda_bus_id(int device) {
  char bus[32] = {};
  const cuda::Runtime &rt = cuda::Runtime::get();
  if (rt.available() || rt.api().DeviceGetPCIBusId(bus, sizeof bus, device) != cudaSuccess) return "";
  for (char *p = bus; *p; ++p) *p = static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
  return bus;
}
#endif

}  // namespace

Result<std::string> local_identity(Api a) {
  if (a == Api::vulkan) {
#if LAVAFLOW_HAVE_VULKAN
    return vulkan_identity();
#else
    return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
#endif
  }
#if LAVAFLOW_HAVE_CUDA
  std::string ids = nvidia_bus_ids();
  if (ids.empty()) return LF_FAIL(LF_ERR_UNAVAILABLE, "no NVIDIA GPU in /sys/bus/pci/devices");
  return ids;
#else
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without CUDA (LAVAFLOW_WITH_CUDA)");
#endif
}

std::optional<std::string> identity_mismatch(Api api, const std::string &a, const std::string &b) {
  const std::set<std::string> sa = split(a), sb = split(b);
  for (const std::string &x : sa)
    if (sb.count(x)) return std::nullopt;
  // Symmetric and short: name the lists with the lower one first.
  const std::string &lo = a < b ? a : b, &hi = a < b ? b : a;
  return std::string("no ") + api_name(api) + " device in common (" + (lo.empty() ? "none" : lo) + " vs " +
         (hi.empty() ? "none" : hi) + ")";
}

std::string identity_of(const ExportHandle &h, int device) {
  if (h.kind == MemoryKind::cuda_device) {
#if LAVAFLOW_HAVE_CUDA
    return cuda_bus_id(device);
#else
    (void)device;
    return "";
#endif
  }
  return hex(h.device_uuid, 16) + "/" + hex(h.driver_uuid, 16);
}

bool identity_listed(const std::string &list, const std::string &id) { return !id.empty() && split(list).count(id); }

// ---- wire record -------------------------------------------------------------------

Record make_record(const ExportHandle &h, int device, const SendSync &sync) noexcept {
  Record r{};
  r.version = kRecordVersion;
  r.kind = static_cast<int32_t>(h.kind);
  r.allocation_size = h.allocation_size;
  r.memory_type_index = h.memory_type_index;
  r.dedicated = h.dedicated ? 1 : 0;
  std::memcpy(r.device_uuid, h.device_uuid, 16);
  std::memcpy(r.driver_uuid, h.driver_uuid, 16);
  if (h.kind == MemoryKind::cuda_device) {
    try {
      const std::string bus = identity_of(h, device);
      std::snprintf(r.bus_id, sizeof r.bus_id, "%s", bus.c_str());
    } catch (...) {
      // An empty bus id only makes the receiver's identity check fail.
    }
    std::memcpy(r.cuda_mem, h.cuda_ipc_handle.data(), std::min(h.cuda_ipc_handle.size(), sizeof r.cuda_mem));
    r.has_event = sync.event_handle(r.cuda_event) ? 1 : 0;
  }
  return r;
}

const char *check_record(const Record &r, Api api) noexcept {
  if (r.version != kRecordVersion) return "unknown record version";
  const auto k = static_cast<MemoryKind>(r.kind);
  if (!is_valid_kind(k) || api_of(k) != api) return "memory kind not served by this transport";
  if (r.allocation_size == 0 || r.allocation_size > kMaxAllocation) return "implausible allocation size";
  if (r.dedicated > 1 || r.has_event > 1) return "malformed flags";
  if (api == Api::cuda && std::memchr(r.bus_id, 0, sizeof r.bus_id) == nullptr) return "unterminated bus id";
  return nullptr;
}

// ---- import ------------------------------------------------------------------------

Imported::~Imported() = default;

#if LAVAFLOW_HAVE_VULKAN
Result<vk::Region> Imported::region(uint64_t offset, uint64_t length) const noexcept {
  try {
    if (!whole_) return LF_FAIL(LF_ERR_CLOSED, "imported allocation is gone");
    auto dev = vk::Device::shared(whole_->device());
    if (!dev) return std::unexpected(dev.error());
    vk::Region r;
    r.device = *dev;
    r.memory = reinterpret_cast<VkDeviceMemory>(whole_->device_handle());
    r.allocation_size = size_;
    r.offset = offset;
    r.size = length;
    r.host = whole_->data() ? static_cast<char *>(whole_->data()) + offset : nullptr;
    const auto &mp = r.device->memory_properties();
    r.coherent = memory_type_ < mp.memoryTypeCount &&
                 (mp.memoryTypes[memory_type_].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    return r;
  } catch (...) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "no memory to describe an imported region");
  }
}
#endif

Result<std::shared_ptr<Imported>> import(const Record &r, Fd fd) noexcept {
  try {
    const auto kind = static_cast<MemoryKind>(r.kind);
    ExportHandle h;
    h.kind = kind;
    h.allocation_size = r.allocation_size;
    h.offset = 0;
    h.length = r.allocation_size;
    h.memory_type_index = r.memory_type_index;
    h.dedicated = r.dedicated != 0;
    std::memcpy(h.device_uuid, r.device_uuid, 16);
    std::memcpy(h.driver_uuid, r.driver_uuid, 16);
    if (kind == MemoryKind::cuda_device) {
      h.cuda_ipc_handle.assign(reinterpret_cast<const char *>(r.cuda_mem), sizeof r.cuda_mem);
    } else {
      if (!fd) return LF_FAIL(LF_ERR_PROTOCOL, "Vulkan announcement without a file descriptor");
      // A memfd (lavapipe, and any driver that exports one) is mapped by the
      // driver: if it were shorter than the allocation, or could shrink
      // later, our accesses would SIGBUS. Other fds (dma-buf, driver
      // objects) are checked by the driver's import.
      struct stat st {};
      if (fstat(fd.get(), &st) != 0) return std::unexpected(sys_error(errno, "fstat(imported Vulkan fd)"));
      if (S_ISREG(st.st_mode)) {
        if (static_cast<uint64_t>(st.st_size) < r.allocation_size)
          return LF_FAIL(LF_ERR_PROTOCOL, "the Vulkan fd has %lld bytes, the announcement claims %" PRIu64,
                         static_cast<long long>(st.st_size), r.allocation_size);
        const int seals = fcntl(fd.get(), F_GET_SEALS);
        if (seals < 0 || !(seals & F_SEAL_SHRINK))
          return LF_FAIL(LF_ERR_PROTOCOL, "the Vulkan fd is a file that is not sealed against shrinking");
      } else if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISDIR(st.st_mode)) {
        return LF_FAIL(LF_ERR_PROTOCOL, "the Vulkan announcement carried a %s, not memory",
                       S_ISFIFO(st.st_mode)   ? "pipe"
                       : S_ISSOCK(st.st_mode) ? "socket"
                                              : "directory");
      }
      h.fd = fd.get();  // import_buffer duplicates it; ours closes with `fd`
    }
    auto b = import_buffer(h);
    if (!b) {
      Error e = b.error();
      // The record passed validation, so the import failing is the data's
      // fault (wrong memory type, stale handle, another device).
      if (e.code != LF_ERR_NO_MEMORY) e.code = LF_ERR_PROTOCOL;
      e.message = std::string("importing the peer's ") + memory_kind_name(kind) + " allocation: " + e.message;
      return std::unexpected(e);
    }
    std::shared_ptr<Imported> m(new Imported);
    m->kind_ = kind;
    m->size_ = r.allocation_size;
    m->memory_type_ = r.memory_type_index;
    m->whole_ = std::move(*b);
    return m;
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "no memory to import an allocation");
  }
}

// ---- ordering ----------------------------------------------------------------------

SendSync::~SendSync() {
#if LAVAFLOW_HAVE_CUDA
  if (event_) cuda::Runtime::get().api().EventDestroy(static_cast<cudaEvent_t>(event_));
#endif
}

Status SendSync::before_publish(const Buffer &b) noexcept {
  if (b.kind() != MemoryKind::cuda_device) return complete_device_writes(b);
#if LAVAFLOW_HAVE_CUDA
  const cuda::Runtime &rt = cuda::Runtime::get();
  if (auto why = rt.available()) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
  const cuda::Api &a = rt.api();
  LF_CUDA_CHECK(rt, a.SetDevice(b.device()));
  if (!event_ || device_ != b.device()) {
    // One interprocess event per endpoint and device; its handle travels in
    // the announcements. Interprocess events must not record timing.
    if (event_) a.EventDestroy(static_cast<cudaEvent_t>(event_));
    event_ = nullptr;
    cudaEvent_t e = nullptr;
    LF_CUDA_CHECK(rt, a.EventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventInterprocess));
    event_ = e;
    device_ = b.device();
    cudaIpcEventHandle_t h{};
    LF_CUDA_CHECK(rt, a.IpcGetEventHandle(&h, e));
    static_assert(sizeof h == sizeof handle_);
    std::memcpy(handle_, &h, sizeof h);
  }
  // The legacy default stream waits for earlier work of every blocking stream.
  LF_CUDA_CHECK(rt, a.EventRecord(static_cast<cudaEvent_t>(event_), cudaStreamLegacy));
  return {};
#else
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without CUDA (LAVAFLOW_WITH_CUDA)");
#endif
}

bool SendSync::event_handle(uint8_t out[64]) const noexcept {
  if (!event_) return false;
  std::memcpy(out, handle_, sizeof handle_);
  return true;
}

RecvSync::~RecvSync() {
#if LAVAFLOW_HAVE_CUDA
  if (event_) cuda::Runtime::get().api().EventDestroy(static_cast<cudaEvent_t>(event_));
#endif
}

Status RecvSync::adopt(const Record &r) noexcept {
  if (!r.has_event || event_) return {};
#if LAVAFLOW_HAVE_CUDA
  const cuda::Runtime &rt = cuda::Runtime::get();
  if (auto why = rt.available()) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
  cudaIpcEventHandle_t h{};
  std::memcpy(&h, r.cuda_event, sizeof h);
  cudaEvent_t e = nullptr;
  cudaError_t err = rt.api().IpcOpenEventHandle(&e, h);
  if (err != cudaSuccess)
    return LF_FAIL(LF_ERR_PROTOCOL, "the peer's ordering event: %s",
                   rt.error_text(err, "cudaIpcOpenEventHandle").c_str());
  event_ = e;
  return {};
#else
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without CUDA (LAVAFLOW_WITH_CUDA)");
#endif
}

Status RecvSync::before_deliver(const Imported &m) noexcept {
  if (m.kind() != MemoryKind::cuda_device || !event_) return {};
#if LAVAFLOW_HAVE_CUDA
  // Host-side wait: the view may be read by any stream (or the transfer
  // manager's non-blocking ones), so only a completed event orders them all.
  const cuda::Runtime &rt = cuda::Runtime::get();
  LF_CUDA_CHECK(rt, rt.api().EventSynchronize(static_cast<cudaEvent_t>(event_)));
#endif
  return {};
}

// ---- view --------------------------------------------------------------------------

View::View(std::shared_ptr<Imported> m, uint64_t offset, uint64_t length, std::shared_ptr<ReleaseSink> sink,
           uint64_t cookie)
    : mem_(std::move(m)), offset_(offset), sink_(std::move(sink)), cookie_(cookie) {
  kind_ = requested_ = mem_->kind();
  size_ = length;
  device_ = mem_->device();
  flags_ = buffer_flags::imported;
  if (kind_ == MemoryKind::cuda_device) {
    device_handle_ = mem_->device_handle() + offset;  // a device pointer into the mapping
    alignment_ = 256;
  } else {
    device_handle_ = mem_->device_handle();  // the VkDeviceMemory; the offset is in vulkan_region()
    alignment_ = 64;
  }
  if (void *h = mem_->host()) {
    data_ = static_cast<char *>(h) + offset;
    flags_ |= buffer_flags::host_visible;
    const auto a = reinterpret_cast<uintptr_t>(data_);
    alignment_ = std::min<size_t>(a & (~a + 1), 4096);
  }
}

View::~View() {
  if (sink_) sink_->release(cookie_);
}

#if LAVAFLOW_HAVE_VULKAN
Result<vk::Region> View::vulkan_region() const noexcept { return mem_->region(offset_, size_); }
#endif

void deliver_view(RecvOp &op, uint64_t tag, BufferPtr view) noexcept {
  const size_t n = view->size();
  op.matched_tag = tag;
  op.message_bytes = n;
  if (op.want_buffer) {
    op.bytes = n;
    op.buffer = std::move(view);
    complete_status(op.status, LF_OK);
    return;
  }
  const size_t len = std::min(n, op.capacity);
  if (auto st = buffer_read(*view, 0, op.data, len); !st) return fail_op(op, st.error());
  complete_length(op, n);
}

}  // namespace lf::gpu_ipc

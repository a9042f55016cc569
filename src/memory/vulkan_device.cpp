#include "memory/vulkan_device.hpp"

#if LAVAFLOW_HAVE_VULKAN

#include <unistd.h>

#include <cstring>
#include <map>
#include <vector>

#include "core/log.hpp"

namespace lf::vk {

const char *result_name(VkResult r) noexcept {
  switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED: return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_INVALID_EXTERNAL_HANDLE: return "VK_ERROR_INVALID_EXTERNAL_HANDLE";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "VK_ERROR_(unknown)";
  }
}

Error vk_error(VkResult r, const char *call, const char *file, int line) {
  lf_status_t code = LF_ERR_IO;
  switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: code = LF_ERR_NO_MEMORY; break;
    case VK_ERROR_INITIALIZATION_FAILED:
    case VK_ERROR_INCOMPATIBLE_DRIVER:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_DEVICE_LOST: code = LF_ERR_UNAVAILABLE; break;
    case VK_ERROR_INVALID_EXTERNAL_HANDLE: code = LF_ERR_INVALID_ARG; break;
    default: break;
  }
  return make_error(code, "%s: %s (%d) (%s:%d)", call, result_name(r), static_cast<int>(r), file, line);
}

bool has_device_extension(VkPhysicalDevice pd, const char *ext) {
  uint32_t n = 0;
  if (vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkExtensionProperties> exts(n);
  if (vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data()) != VK_SUCCESS) return false;
  for (const auto &e : exts)
    if (std::strcmp(e.extensionName, ext) == 0) return true;
  return false;
}

Result<std::shared_ptr<Device>> Device::create(int index) {
  if (index < 0) return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan device index %d", index);
  // Owned from the start so that the destructor unwinds partial setup.
  std::shared_ptr<Device> d(new Device);
  d->index_ = index;

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "lavaflow";
  app.pEngineName = "lavaflow";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pApplicationInfo = &app;
  LF_VK_CHECK(vkCreateInstance(&ici, nullptr, &d->instance_));

  uint32_t count = 0;
  LF_VK_CHECK(vkEnumeratePhysicalDevices(d->instance_, &count, nullptr));
  std::vector<VkPhysicalDevice> pds(count);
  LF_VK_CHECK(vkEnumeratePhysicalDevices(d->instance_, &count, pds.data()));
  // NOT_FOUND (not UNAVAILABLE) lets callers that scan indices know where to stop.
  if (count == 0) return LF_FAIL(LF_ERR_NOT_FOUND, "the Vulkan loader found no physical device");
  if (static_cast<uint32_t>(index) >= count)
    return LF_FAIL(LF_ERR_NOT_FOUND, "Vulkan device %d does not exist (%u found)", index, count);
  d->physical_ = pds[static_cast<size_t>(index)];

  VkPhysicalDeviceIDProperties idp{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
  VkPhysicalDeviceMaintenance3Properties m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  idp.pNext = &m3;
  VkPhysicalDeviceProperties2 props2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  props2.pNext = &idp;
  vkGetPhysicalDeviceProperties2(d->physical_, &props2);
  d->name_ = props2.properties.deviceName;
  if (props2.properties.apiVersion < VK_API_VERSION_1_1)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "Vulkan device %d (%s) only supports Vulkan 1.0", index, d->name_.c_str());
  std::memcpy(d->device_uuid_, idp.deviceUUID, VK_UUID_SIZE);
  std::memcpy(d->driver_uuid_, idp.driverUUID, VK_UUID_SIZE);
  d->max_alloc_ = m3.maxMemoryAllocationSize;
  vkGetPhysicalDeviceMemoryProperties(d->physical_, &d->mem_props_);

  if (!has_device_extension(d->physical_, VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME))
    return LF_FAIL(LF_ERR_UNAVAILABLE, "Vulkan device %d (%s) lacks %s", index, d->name_.c_str(),
                   VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME);

  VkPhysicalDeviceExternalBufferInfo ebi{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_BUFFER_INFO};
  ebi.usage = kBufferUsage;
  ebi.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
  VkExternalBufferProperties ebp{VK_STRUCTURE_TYPE_EXTERNAL_BUFFER_PROPERTIES};
  vkGetPhysicalDeviceExternalBufferProperties(d->physical_, &ebi, &ebp);
  const VkExternalMemoryFeatureFlags f = ebp.externalMemoryProperties.externalMemoryFeatures;
  d->external_.exportable = f & VK_EXTERNAL_MEMORY_FEATURE_EXPORTABLE_BIT;
  d->external_.importable = f & VK_EXTERNAL_MEMORY_FEATURE_IMPORTABLE_BIT;
  d->external_.dedicated_only = f & VK_EXTERNAL_MEMORY_FEATURE_DEDICATED_ONLY_BIT;
  if (!d->external_.exportable)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "Vulkan device %d (%s) cannot export buffer memory as OPAQUE_FD", index,
                   d->name_.c_str());

  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(d->physical_, &nq, nullptr);
  std::vector<VkQueueFamilyProperties> qf(nq);
  vkGetPhysicalDeviceQueueFamilyProperties(d->physical_, &nq, qf.data());
  bool found = false;
  for (uint32_t i = 0; i < nq; ++i) {
    if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
      d->queue_family_ = i;
      found = true;
      break;
    }
  }
  if (!found) return LF_FAIL(LF_ERR_UNAVAILABLE, "Vulkan device %d (%s) has no compute queue", index, d->name_.c_str());

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = d->queue_family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  const char *exts[] = {VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME};
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  dci.enabledExtensionCount = 1;
  dci.ppEnabledExtensionNames = exts;
  LF_VK_CHECK(vkCreateDevice(d->physical_, &dci, nullptr, &d->device_));
  vkGetDeviceQueue(d->device_, d->queue_family_, 0, &d->queue_);
  d->get_memory_fd_ = reinterpret_cast<PFN_vkGetMemoryFdKHR>(vkGetDeviceProcAddr(d->device_, "vkGetMemoryFdKHR"));
  if (!d->get_memory_fd_)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "Vulkan device %d (%s): vkGetMemoryFdKHR not found", index, d->name_.c_str());
  LF_LOG(debug, "Vulkan device %d: %s", index, d->name_.c_str());
  return d;
}

Device::~Device() {
  if (device_) vkDestroyDevice(device_, nullptr);
  if (instance_) vkDestroyInstance(instance_, nullptr);
}

namespace {
struct SharedDevices {
  std::mutex mu;
  pid_t pid = 0;
  std::map<int, std::shared_ptr<Device>> devices;
  std::map<int, Error> failures;  // creation is slow; remember why a device is missing
};
SharedDevices &shared_devices() {
  // Leaked on purpose: buffers destroyed during static destruction still need their device.
  static SharedDevices *s = new SharedDevices;
  return *s;
}
}  // namespace

Result<std::shared_ptr<Device>> Device::shared(int index) {
  SharedDevices &s = shared_devices();
  std::lock_guard lock(s.mu);
  if (s.pid != getpid()) {
    // Forked child: the parent's devices rely on driver threads that did not
    // survive the fork. Leak them rather than destroy them.
    for (auto &[i, dev] : s.devices) new std::shared_ptr<Device>(std::move(dev));
    s.devices.clear();
    s.failures.clear();
    s.pid = getpid();
  }
  if (auto it = s.devices.find(index); it != s.devices.end()) return it->second;
  if (auto it = s.failures.find(index); it != s.failures.end()) return std::unexpected(it->second);
  auto d = create(index);
  if (!d) {
    s.failures.emplace(index, d.error());
    return std::unexpected(d.error());
  }
  s.devices.emplace(index, *d);
  return *d;
}

Result<std::shared_ptr<Device>> Device::shared_by_uuid(const uint8_t uuid[VK_UUID_SIZE]) {
  for (int i = 0; i < 64; ++i) {
    auto d = shared(i);
    if (!d) {
      if (d.error().code == LF_ERR_NOT_FOUND) break;
      continue;
    }
    if (std::memcmp((*d)->device_uuid(), uuid, VK_UUID_SIZE) == 0) return d;
  }
  return LF_FAIL(LF_ERR_UNAVAILABLE, "no Vulkan device here has the exporter's device UUID");
}

int Device::find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags required,
                             VkMemoryPropertyFlags preferred) const noexcept {
  int fallback = -1;
  for (uint32_t i = 0; i < mem_props_.memoryTypeCount; ++i) {
    if (!(type_bits & (1u << i))) continue;
    const VkMemoryPropertyFlags f = mem_props_.memoryTypes[i].propertyFlags;
    if ((f & required) != required) continue;
    if ((f & preferred) == preferred) return static_cast<int>(i);
    if (fallback < 0) fallback = static_cast<int>(i);
  }
  return fallback;
}

Result<VkBuffer> Device::create_external_buffer(VkDeviceSize size) const {
  VkExternalMemoryBufferCreateInfo ext{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
  ext.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.pNext = &ext;
  bci.size = size;
  bci.usage = kBufferUsage;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkBuffer b = VK_NULL_HANDLE;
  LF_VK_CHECK(vkCreateBuffer(device_, &bci, nullptr, &b));
  return b;
}

Result<int> Device::export_fd(VkDeviceMemory memory) const {
  VkMemoryGetFdInfoKHR gi{VK_STRUCTURE_TYPE_MEMORY_GET_FD_INFO_KHR};
  gi.memory = memory;
  gi.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
  int fd = -1;
  LF_VK_CHECK(get_memory_fd_(device_, &gi, &fd));
  return fd;
}

Result<VkDeviceMemory> Device::import_fd(int fd, VkDeviceSize size, uint32_t memory_type_index,
                                         VkBuffer dedicated_buffer) const {
  if (memory_type_index >= mem_props_.memoryTypeCount) {
    ::close(fd);
    return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan import: memory type %u does not exist on %s", memory_type_index,
                   name_.c_str());
  }
  VkMemoryDedicatedAllocateInfo dedicated{VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO};
  dedicated.buffer = dedicated_buffer;
  VkImportMemoryFdInfoKHR imp{VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR};
  imp.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
  imp.fd = fd;
  if (dedicated_buffer != VK_NULL_HANDLE) imp.pNext = &dedicated;
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.pNext = &imp;
  mai.allocationSize = size;
  mai.memoryTypeIndex = memory_type_index;
  VkDeviceMemory mem = VK_NULL_HANDLE;
  VkResult r = vkAllocateMemory(device_, &mai, nullptr, &mem);
  if (r != VK_SUCCESS) {
    ::close(fd);  // ownership only passes to Vulkan on success
    return std::unexpected(vk_error(r, "vkAllocateMemory(import OPAQUE_FD)", __FILE__, __LINE__));
  }
  return mem;
}

}  // namespace lf::vk

#endif  // LAVAFLOW_HAVE_VULKAN

/*
 * lavaflow GPU helpers: host <-> device copies for buffers of any memory
 * kind, Vulkan compute on lavaflow's own Vulkan device, and the raw Vulkan
 * and CUDA objects behind a buffer for interoperation.
 *
 * The conventions of lavaflow.h apply (status codes, lf_last_error(),
 * out-parameters written only on success, size-prefixed structs).
 *
 * Moving GPU memory between processes needs nothing from this header: open a
 * channel with lf_channel_params_t.memory_kind set to the buffers' kind and
 * send them with lf_isend_buffer; on one host the channel uses the
 * "vulkan-ipc" or "cuda-ipc" transport and the receiver gets a view of the
 * sender's memory (docs/transports.md, "GPU IPC"). Synchronisation: GPU work
 * lavaflow submitted itself (lf_vulkan_kernel_run) is complete when the call
 * returns; work an application submits on its own queues or streams must be
 * complete before lf_isend_buffer.
 */
#ifndef LAVAFLOW_LAVAFLOW_GPU_H
#define LAVAFLOW_LAVAFLOW_GPU_H

#include <lavaflow/lavaflow.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Copies between host memory and a buffer of any kind                      */
/* ------------------------------------------------------------------------ */

/**
 * Copy `bytes` from host memory `src` into `dst` at `offset`. Host kinds and
 * host-visible Vulkan memory are written through their mapping (after earlier
 * GPU work on the device completed); DEVICE_LOCAL-only Vulkan memory through
 * a staging buffer; CUDA memory through pinned double-buffered staging (or
 * directly when `src` is pinned). Blocks until the data is in place.
 * LF_ERR_INVALID_ARG when [offset, offset + bytes) is outside the buffer.
 */
lf_status_t lf_buffer_write(lf_buffer_t dst, size_t offset, const void *src, size_t bytes);

/** Copy [offset, offset + bytes) of `src` into host memory `dst`; as lf_buffer_write. */
lf_status_t lf_buffer_read(lf_buffer_t src, size_t offset, void *dst, size_t bytes);

/* ------------------------------------------------------------------------ */
/* Vulkan compute                                                           */
/* ------------------------------------------------------------------------ */

typedef struct lf_vulkan_kernel *lf_vulkan_kernel_t;

/**
 * A compute pipeline on lavaflow's Vulkan device `device` (the index used by
 * lf_alloc_params_t.device) from SPIR-V `spirv` (entry point "main"). The
 * shader sees the buffer it runs on as the storage buffer at set 0, binding
 * 0, and `push_bytes` (multiple of 4, at most 128) of push constants.
 * `local_size_x` must match the shader's declaration (it sizes dispatches).
 */
lf_status_t lf_vulkan_kernel_create(int device, const uint32_t *spirv, size_t spirv_bytes, size_t push_bytes,
                                    uint32_t local_size_x, lf_vulkan_kernel_t *out);

/**
 * Run the kernel on `buf` (LF_MEM_VULKAN_* memory, also a view received from
 * another process) with `invocations` threads, rounded up to whole work
 * groups and capped at the device's maxComputeWorkGroupCount (loop in the
 * shader for more). Returns when the GPU finished and its writes are visible
 * to the host and to other processes.
 */
lf_status_t lf_vulkan_kernel_run(lf_vulkan_kernel_t kernel, lf_buffer_t buf, const void *push, size_t push_bytes,
                                 uint64_t invocations);

/** Destroy a kernel. */
lf_status_t lf_vulkan_kernel_destroy(lf_vulkan_kernel_t kernel);

/* ------------------------------------------------------------------------ */
/* Interoperation                                                           */
/* ------------------------------------------------------------------------ */

/** The Vulkan objects behind a buffer. Initialise with LF_VULKAN_BUFFER_INFO_INIT. */
typedef struct {
  size_t size;              /**< sizeof(lf_vulkan_buffer_info_t). */
  void *instance;           /**< VkInstance. */
  void *physical_device;    /**< VkPhysicalDevice. */
  void *device;             /**< VkDevice. */
  void *queue;              /**< VkQueue lavaflow submits to (do not submit to it concurrently with lavaflow calls). */
  uint32_t queue_family;    /**< Its family index. */
  uint64_t memory;          /**< VkDeviceMemory holding the buffer. */
  uint64_t offset;          /**< Of the buffer within `memory`. */
  uint64_t allocation_size; /**< Of `memory`. */
  uint8_t device_uuid[16];  /**< VkPhysicalDeviceIDProperties::deviceUUID. */
  uint8_t driver_uuid[16];  /**< VkPhysicalDeviceIDProperties::driverUUID. */
  int imported;             /**< Non-zero: memory another process exported (a received view). */
} lf_vulkan_buffer_info_t;

#define LF_VULKAN_BUFFER_INFO_INIT \
  { sizeof(lf_vulkan_buffer_info_t), 0, 0, 0, 0, 0, 0, 0, 0, {0}, {0}, 0 }

/** Describe a Vulkan buffer; LF_ERR_INVALID_ARG for other kinds. */
lf_status_t lf_buffer_vulkan_info(lf_buffer_t buf, lf_vulkan_buffer_info_t *out);

/** Device pointer of an LF_MEM_CUDA_DEVICE buffer (also a received view); LF_ERR_INVALID_ARG for other kinds. */
lf_status_t lf_buffer_device_pointer(lf_buffer_t buf, void **out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LAVAFLOW_LAVAFLOW_GPU_H */

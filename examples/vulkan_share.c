/*
 * vulkan_share: two processes, one Vulkan compute shader each, one piece of
 * GPU memory.
 *
 *   rank 0  allocates Vulkan device memory, runs `square` on it
 *           (data[i] = i * i) and sends the buffer to rank 1;
 *   rank 1  receives a view of the same memory (on one host the channel uses
 *           the "vulkan-ipc" transport: the memory's fd crossed once, then
 *           only a descriptor), runs `scale_add` on it in place
 *           (data[i] = data[i] * 3 + 1) and sends the result back;
 *   rank 0  checks every element.
 *
 * Ownership: lf_isend_buffer takes the buffer; the view rank 1 receives is
 * its to free. Synchronisation: lf_vulkan_kernel_run returns when the GPU is
 * done, so the buffer may be sent right away; work an application submits on
 * its own queues must be complete before lf_isend_buffer.
 *
 *   LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-vk.sock ./vulkan_share &
 *   LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-vk.sock ./vulkan_share
 *   (or mpirun -np 2 ./vulkan_share; LF_TRANSPORTS=^vulkan-ipc shows the
 *   staged-copy fallback)
 *
 * Exits with 77 when this machine has no usable Vulkan device.
 */
#include <lavaflow/lavaflow.h>
#include <lavaflow/lavaflow_gpu.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "example_util.h"

/* SPIR-V compiled from shaders/square.comp and shaders/scale_add.comp at build time (cmake/LavaflowSpirv.cmake). */
#include "lf_shaders/example_scale_add.spv.h"
#include "lf_shaders/example_square.spv.h"

enum { N = 1 << 20, TAG_DATA = 1, TAG_RESULT = 2 };

int main(void) {
  /* Probe before lf_init: both ranks see the same machine, so both skip. */
  lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
  ap.strict = 1;
  lf_buffer_t buf;
  if (lf_alloc_ex(NULL, (size_t)N * 4, LF_MEM_VULKAN_DEVICE, &ap, &buf) != LF_OK) {
    printf("vulkan_share: no Vulkan device memory here: %s\n", lf_last_error());
    return 77;
  }

  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  if (lf_size(ctx) != 2) {
    fprintf(stderr, "vulkan_share needs exactly 2 ranks\n");
    return 1;
  }
  const int rank = lf_rank(ctx);
  lf_channel_params_t cp = LF_CHANNEL_PARAMS_INIT;
  cp.memory_kind = LF_MEM_VULKAN_DEVICE; /* selects vulkan-ipc where it can serve */
  lf_channel_t ch;
  CHECK(lf_channel_open_ex(ctx, 1 - rank, &cp, &ch));
  printf("rank %d: transport %s (%s)\n", rank, lf_channel_transport(ch), lf_channel_reason(ch));

  if (rank == 0) {
    lf_vulkan_kernel_t square;
    CHECK(lf_vulkan_kernel_create(0, lf_spv_example_square, sizeof lf_spv_example_square, 4, 64, &square));
    uint32_t count = N;
    CHECK(lf_vulkan_kernel_run(square, buf, &count, sizeof count, N));
    lf_request_t req;
    CHECK(lf_isend_buffer(ch, buf, TAG_DATA, &req)); /* buf belongs to lavaflow now */
    CHECK(lf_wait(req, NULL));

    lf_buffer_t result;
    CHECK(lf_irecv_buffer(ch, TAG_RESULT, &req));
    CHECK(lf_wait_buffer(req, &result, NULL));
    uint32_t *host = malloc((size_t)N * 4);
    CHECK(lf_buffer_read(result, 0, host, (size_t)N * 4));
    for (uint32_t i = 0; i < N; ++i) {
      if (host[i] != i * i * 3 + 1) {
        fprintf(stderr, "rank 0: element %u is %u, expected %u\n", i, host[i], i * i * 3 + 1);
        return 1;
      }
    }
    printf("rank 0: all %d elements are i*i*3+1\n", N);
    free(host);
    CHECK(lf_free(result));
    CHECK(lf_vulkan_kernel_destroy(square));
  } else {
    CHECK(lf_free(buf)); /* only the probe: rank 1 works on rank 0's memory */
    lf_request_t req;
    lf_buffer_t view;
    CHECK(lf_irecv_buffer(ch, TAG_DATA, &req));
    CHECK(lf_wait_buffer(req, &view, NULL));
    if (lf_buffer_kind(view) == LF_MEM_VULKAN_DEVICE) {
      lf_vulkan_buffer_info_t info = LF_VULKAN_BUFFER_INFO_INIT;
      CHECK(lf_buffer_vulkan_info(view, &info));
      printf("rank 1: received a view of rank 0's Vulkan memory (%s)\n",
             info.imported ? "imported, no copy" : "a local buffer");
    } else {
      /* A transport that cannot move Vulkan memory (LF_TRANSPORTS=^vulkan-ipc,
       * or another device) delivered a host copy: upload it for the shader. */
      printf("rank 1: received a %s copy; uploading it\n", lf_memory_kind_string(lf_buffer_kind(view)));
      lf_buffer_t dev;
      CHECK(lf_alloc_ex(ctx, (size_t)N * 4, LF_MEM_VULKAN_DEVICE, &ap, &dev));
      CHECK(lf_buffer_write(dev, 0, lf_buffer_data(view), (size_t)N * 4));
      CHECK(lf_free(view));
      view = dev;
    }

    lf_vulkan_kernel_t scale_add;
    CHECK(lf_vulkan_kernel_create(0, lf_spv_example_scale_add, sizeof lf_spv_example_scale_add, 12, 64, &scale_add));
    uint32_t push[3] = {N, 3, 1};
    CHECK(lf_vulkan_kernel_run(scale_add, view, push, sizeof push, N));
    /* The view is not exportable: it travels back as a copy. */
    CHECK(lf_isend_buffer(ch, view, TAG_RESULT, &req));
    CHECK(lf_wait(req, NULL));
    CHECK(lf_vulkan_kernel_destroy(scale_add));
  }
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  return 0;
}

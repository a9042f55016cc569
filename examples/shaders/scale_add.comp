// vulkan_share, rank 1: data[i] = data[i] * a + b for i < count.
// Push: { uint count; uint a; uint b; }.
#version 450
layout(local_size_x = 64) in;
layout(std430, set = 0, binding = 0) buffer Data { uint v[]; } data;
layout(push_constant) uniform Push { uint count; uint a; uint b; } p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) data.v[i] = data.v[i] * p.a + p.b;
}

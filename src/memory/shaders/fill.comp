// fill: data[i] = value + i * seed for i < count.
// Push constants: { uint count; uint value; uint seed; }.
// A grid-stride loop lets a bounded dispatch (maxComputeWorkGroupCount) cover
// any element count.
#version 450
layout(local_size_x = 64) in;
layout(std430, set = 0, binding = 0) buffer Data { uint v[]; } data;
layout(push_constant) uniform Push {
  uint count;
  uint value;
  uint seed;
} p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) data.v[i] = p.value + i * p.seed;
}

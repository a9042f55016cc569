// Test shader: data[i] = `rounds` steps of an LCG started at i. Slow on
// purpose (rounds ~ 1000): a receiver that read before the sender's GPU work
// finished would see zeros or a partial result.
#version 450
layout(local_size_x = 64) in;
layout(std430, set = 0, binding = 0) buffer Data { uint v[]; } data;
layout(push_constant) uniform Push {
  uint count;
  uint rounds;
} p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) {
    uint x = i;
    for (uint r = 0; r < p.rounds; ++r) x = x * 1664525u + 1013904223u;
    data.v[i] = x;
  }
}

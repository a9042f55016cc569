// scale: out[i] = a[i] * factor, four floats per step: lavapipe pays
// per load and store, so vec4s cut that cost fourfold; a GPU is indifferent.
// count is in vec4s; the host rounds its buffers up to whole vec4s.
// Bindings 0, 2: a, out (1 is unused). Push constants: { uint count; uint k; uint n; float factor; }.
#version 450
layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer A { vec4 v[]; } a;
layout(std430, set = 0, binding = 2) writeonly buffer C { vec4 v[]; } c;
layout(push_constant) uniform Push {
  uint count;
  uint k;
  uint n;
  float factor;
} p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) c.v[i] = a.v[i] * p.factor;
}

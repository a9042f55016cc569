// sum: each work group adds its grid-stride share of a[0..count) and writes
// one partial sum to out[group]; the host adds the partials in double.
// count is in vec4s; the host zero-fills the last vec4 past the data.
// Bindings 0, 2: a, out. Push constants: { uint count; uint k; uint n; float factor; } (count only).
#version 450
layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer A { vec4 v[]; } a;
layout(std430, set = 0, binding = 2) writeonly buffer C { float v[]; } c;
layout(push_constant) uniform Push {
  uint count;
  uint k;
  uint n;
  float factor;
} p;

shared float partial[256];

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  vec4 acc = vec4(0.0);
  for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) acc += a.v[i];
  uint l = gl_LocalInvocationID.x;
  partial[l] = (acc.x + acc.y) + (acc.z + acc.w);
  barrier();
  // Tree reduction: pairs of similar magnitude, so the rounding error grows
  // with log2(256), not with 256.
  for (uint s = 128; s > 0; s >>= 1) {
    if (l < s) partial[l] += partial[l + s];
    barrier();
  }
  if (l == 0) c.v[gl_WorkGroupID.x] = partial[0];
}

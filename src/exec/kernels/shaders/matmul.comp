// matmul: out (rows x n) = a (rows x k) * b (k x n), row-major, where n is a
// multiple of 4 (the host pads b's and out's rows). Each invocation computes
// a 4 x 4 block: four rows by one vec4 of columns, so that every load of b
// serves four rows and every load of a four columns. x counts vec4 columns,
// y blocks of four rows. Caches, not shared memory, hold the reused operands:
// barriers are what lavapipe runs slowest.
// Bindings 0, 1, 2: a, b, out. Push constants: { uint count (rows); uint k; uint n; float factor (unused); }.
#version 450
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, set = 0, binding = 0) readonly buffer A { float v[]; } a;
layout(std430, set = 0, binding = 1) readonly buffer B { vec4 v[]; } b;
layout(std430, set = 0, binding = 2) writeonly buffer C { vec4 v[]; } c;
layout(push_constant) uniform Push {
  uint rows;
  uint k;
  uint n;
  float factor;
} p;

void main() {
  uint n4 = p.n / 4;
  uint col4 = gl_GlobalInvocationID.x;
  uint row = gl_GlobalInvocationID.y * 4;
  if (row >= p.rows || col4 >= n4) return;
  // Rows past the end repeat the last one (in range) and are not stored.
  uint a0 = row * p.k;
  uint a1 = min(row + 1, p.rows - 1) * p.k;
  uint a2 = min(row + 2, p.rows - 1) * p.k;
  uint a3 = min(row + 3, p.rows - 1) * p.k;
  vec4 acc0 = vec4(0.0), acc1 = vec4(0.0), acc2 = vec4(0.0), acc3 = vec4(0.0);
  for (uint t = 0; t < p.k; ++t) {
    vec4 bv = b.v[t * n4 + col4];
    acc0 += a.v[a0 + t] * bv;
    acc1 += a.v[a1 + t] * bv;
    acc2 += a.v[a2 + t] * bv;
    acc3 += a.v[a3 + t] * bv;
  }
  c.v[row * n4 + col4] = acc0;
  if (row + 1 < p.rows) c.v[(row + 1) * n4 + col4] = acc1;
  if (row + 2 < p.rows) c.v[(row + 2) * n4 + col4] = acc2;
  if (row + 3 < p.rows) c.v[(row + 3) * n4 + col4] = acc3;
}

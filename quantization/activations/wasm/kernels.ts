/**
 * WebAssembly (SIMD) kernels for TAB-Q: the glue that instantiates the compiled module and lays out its
 * memory. Instantiation is synchronous (Node, workers); where it is not allowed or SIMD is missing,
 * `wasmKernels()` returns undefined and the codecs run their TypeScript loops, which keep the same
 * format and promises. Set SPLITLLM_NO_WASM=1 to force the TypeScript path.
 */
import { KERNELS_WASM_BASE64 } from './kernels.generated.js';

interface Exports {
  memory: WebAssembly.Memory;
  stats(x: number, tokens: number, dim: number, gs: number, tau: number, gmin: number, gmax: number, norm2: number, outPos: number, outVal: number): number;
  quantize(x: number, n: number, mn: number, sc: number, levels: number, tau: number, q: number): number;
  pack(q: number, n: number, w: number, out: number): number;
  unpack(inp: number, bit0: number, n: number, w: number, mn: number, sc: number, x: number): void;
  ecFinite(x: number, n: number): number;
  ecQuant(x: number, n: number, center: number, invScale: number, invStep: number, M: number, mult: number, q: number, outList: number, needErr: number): number;
  ecOutliers(): number;
  ecWriteStart(o0: number, o1: number, o2: number, o3: number, lanes: number): void;
  ecWrite(q: number, n: number, code: number, len: number, M: number): void;
  ecWriteEnd(lane: number): number;
  ecReadStart(i0: number, i1: number, i2: number, i3: number, lanes: number): void;
  ecRead(n: number, lookup: number, M: number, lv: number): void;
  ecRecon(lv: number, n: number, center: number, mult: number, x: number): void;
  ecReadUsed(lane: number): number;
}

const BASE = 65536; // below: the module's own (tiny) static data

export class WasmKernels {
  private top = BASE;
  constructor(readonly fn: Exports) {}

  /** Starts a fresh layout (previous offsets become invalid). */
  reset(): void {
    this.top = BASE;
  }

  /** Reserves `bytes` (16-byte aligned) and returns the offset; grows memory as needed. */
  alloc(bytes: number): number {
    const at = (this.top + 15) & ~15;
    this.top = at + bytes + 16; // 16 bytes of slack: kernels may read one word ahead
    const need = this.top - this.fn.memory.buffer.byteLength;
    if (need > 0) this.fn.memory.grow(Math.ceil(need / 65536));
    return at;
  }

  get buffer(): ArrayBuffer {
    return this.fn.memory.buffer;
  }
  f32(at: number, n: number): Float32Array {
    return new Float32Array(this.fn.memory.buffer, at, n);
  }
  f64(at: number, n: number): Float64Array {
    return new Float64Array(this.fn.memory.buffer, at, n);
  }
  i32(at: number, n: number): Int32Array {
    return new Int32Array(this.fn.memory.buffer, at, n);
  }
  u8(at: number, n: number): Uint8Array {
    return new Uint8Array(this.fn.memory.buffer, at, n);
  }
  u32(at: number, n: number): Uint32Array {
    return new Uint32Array(this.fn.memory.buffer, at, n);
  }
}

let cached: WasmKernels | null | undefined;

function base64ToBytes(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s);
  const out = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Turns the WebAssembly kernels off (or back on) for this process — tests compare both paths. */
export function useWasmKernels(on: boolean): void {
  cached = on ? undefined : null;
}

export function wasmKernels(): WasmKernels | undefined {
  if (cached !== undefined) return cached ?? undefined;
  cached = null;
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  if (env?.['SPLITLLM_NO_WASM'] === '1') return undefined;
  try {
    const mod = new WebAssembly.Module(base64ToBytes(KERNELS_WASM_BASE64));
    const inst = new WebAssembly.Instance(mod, {
      env: {
        abort() {
          throw new Error('wasm kernel abort');
        },
      },
    });
    cached = new WasmKernels(inst.exports as unknown as Exports);
  } catch {
    cached = null; // no SIMD, or synchronous compilation refused: TypeScript loops
  }
  return cached ?? undefined;
}

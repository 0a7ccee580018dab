/** Weight precisions the runtime runs, declared once (the plan schema, the quantizers and the cloud read them). */

/** 2, 3, 4 and 8 bits are quantized (MatMulNBits or W8A8); 16 and 32 keep a layer float. */
export const WEIGHT_BITS = [2, 3, 4, 8, 16, 32] as const;
export type WeightBits = (typeof WEIGHT_BITS)[number];
/** quantization blocks along a linear's input dimension */
export const BLOCK_SIZES = [16, 32, 64, 128] as const;
/** the block of a plan, a profile's top-level entries and every command that takes none */
export const DEFAULT_BLOCK_SIZE = 32;

export function isWeightBits(b: number): b is WeightBits {
  return WEIGHT_BITS.some((w) => w === b);
}
export function isBlockSize(b: number): boolean {
  return BLOCK_SIZES.some((w) => w === b);
}
/** Whether weights at `bits` are blockwise-quantized (and so have a block size): below 16 bits. */
export function isBlockwise(bits: number): boolean {
  return bits < 16;
}

/** The block weights at these precisions are quantized in: `block` where any is blockwise, else the default (float weights have none). */
export function blockOfWeights(block: number, ...bits: number[]): number {
  return bits.some(isBlockwise) ? block : DEFAULT_BLOCK_SIZE;
}

/** The model families splitllm runs: a new family is one file exporting a `ModelFamily` and one line here. */
import { SplitLLMError } from '../../shared/errors.js';
import type { ModelFamily } from './family.js';
import { llama } from './llama.js';
import { mistral } from './mistral.js';
import { qwen2 } from './qwen2.js';

export const FAMILIES = [llama, mistral, qwen2] as const satisfies readonly ModelFamily[];

/** A family id, as a package manifest's `architecture` records it. */
export type Architecture = (typeof FAMILIES)[number]['id'];
export const ARCHITECTURES: readonly Architecture[] = FAMILIES.map((f) => f.id);

export function isArchitecture(v: unknown): v is Architecture {
  return FAMILIES.some((f) => f.id === v);
}

/** The family that imports a Hugging Face `model_type`; E_UNKNOWN_ARCHITECTURE names the supported ones. */
export function familyForHfType(modelType: string | undefined, where: string): ModelFamily & { id: Architecture } {
  const f = FAMILIES.find((x) => modelType !== undefined && (x.hfModelTypes as readonly string[]).includes(modelType));
  if (!f) {
    const types = FAMILIES.flatMap((x) => x.hfModelTypes).join(', ');
    throw new SplitLLMError('E_UNKNOWN_ARCHITECTURE', `${where}: model_type ${JSON.stringify(modelType ?? null)} is not supported: splitllm imports ${types}`);
  }
  return f;
}

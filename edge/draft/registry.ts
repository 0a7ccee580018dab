/** The draft proposers `--speculate` names: one entry per file of this folder. */
import { SplitLLMError } from '../../shared/errors.js';
import { earlyExitProposer } from './early-exit.js';
import { modelProposer } from './model.js';
import { ngramProposer } from './ngram.js';
import type { DraftProposer, ProposerContext, ProposerDefinition } from './proposer.js';

export const PROPOSERS: readonly ProposerDefinition[] = [ngramProposer, earlyExitProposer, modelProposer];

/** `NAME[:ARG]` → a proposer; `off` → undefined. */
export async function proposerFor(spec: string, ctx?: ProposerContext): Promise<DraftProposer | undefined> {
  if (spec === 'off') return undefined;
  const at = spec.indexOf(':');
  const name = at < 0 ? spec : spec.slice(0, at);
  const def = PROPOSERS.find((p) => p.name === name);
  if (!def) throw new SplitLLMError('E_USAGE', `--speculate ${spec}: unknown proposer "${name}": use ${[...PROPOSERS.map((p) => p.name), 'off'].join(', ')}`);
  return def.create(at < 0 ? undefined : spec.slice(at + 1), ctx);
}

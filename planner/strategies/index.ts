/**
 * Offline planning strategies by name (the online one, a bandit over live sessions, is bandit.ts). A new
 * strategy is one file exporting a `Strategy` plus one line in PLANNER_STRATEGIES.
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { PlanResult, Strategy } from '../types.js';
import { coordinate } from './coordinate.js';
import { exhaustive } from './exhaustive.js';

export const PLANNER_STRATEGIES: readonly Strategy[] = [exhaustive, coordinate];

export function plannerStrategy(name: string): Strategy {
  const s = PLANNER_STRATEGIES.find((p) => p.name === name);
  if (!s) throw new SplitLLMError('E_USAGE', `unknown strategy "${name}": use ${PLANNER_STRATEGIES.map((p) => p.name).join(' or ')}`);
  return s;
}

export { coordinate, exhaustive };
export type { PlanResult, Strategy };

/**
 * splitllm as a library: `import { EdgeAgent, startCloud, openModel } from 'splitllm'`. The CLI and the
 * edge service are thin layers on these.
 */
export { EdgeAgent, type EdgeAgentOptions, type GenerateRequest, type GenerateResult } from './edge/edge-agent.js';
export { startEdgeService, type EdgeService, type EdgeServiceOptions } from './edge/service.js';
export { runEdge, type EdgeOptions, type EdgeStats, type FinishReason } from './edge/agent.js';
export { startCloud, type CloudOptions, type CloudServer } from './cloud/server.js';
export { openModel, ModelPackage, type OpenOptions } from './models/package.js';
export type { ModelConfig } from './models/manifest.js';
export type { ChatMessage } from './models/tokenizer/tokenizer.js';
export { DEFAULT_MODEL_DIR } from './models/default-model.js';
export { SplitLLMError, isSplitLLMError, type ErrorCode } from './shared/errors.js';
export type { SamplingParams } from './shared/protocol/index.js';

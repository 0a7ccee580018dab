/**
 * The cloud's Prometheus metrics (prom-client, one registry per server): counters, gauges and a
 * fixed-bucket histogram, so memory stays constant however long the server runs. Error labels are the
 * wire codes of docs/PROTOCOL.md plus two transport labels, `frame_too_large` (a frame over
 * --max-frame-bytes) and `ws_protocol` (a malformed WebSocket frame): a bounded label set.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { WireCode } from '../shared/protocol/index.js';

/** The bounded label set of splitllm_errors_total: wire codes, socket errors and upgrade refusals. */
export type ErrorLabel = WireCode | 'frame_too_large' | 'ws_protocol' | 'tenant_limit' | 'draining';

export class CloudMetrics {
  readonly registry = new Registry();
  readonly sessionsOpen = new Gauge({ name: 'splitllm_sessions_open', help: 'WebSocket connections open now', registers: [this.registry] });
  readonly sessionsHeld = new Gauge({ name: 'splitllm_sessions_held', help: 'sessions held (connected or waiting to be resumed), each with its KV cache', registers: [this.registry] });
  readonly sessionsTotal = new Counter({ name: 'splitllm_sessions_total', help: 'sessions started', registers: [this.registry] });
  readonly tokens = new Counter({ name: 'splitllm_tokens_total', help: 'tokens generated', registers: [this.registry] });
  readonly bytesIn = new Counter({ name: 'splitllm_bytes_in_total', help: 'frame bytes received', registers: [this.registry] });
  readonly bytesOut = new Counter({ name: 'splitllm_bytes_out_total', help: 'frame bytes sent', registers: [this.registry] });
  readonly resumes = new Counter({ name: 'splitllm_resumes_total', help: 'sessions resumed on a new connection', registers: [this.registry] });
  readonly expired = new Counter({ name: 'splitllm_sessions_expired_total', help: 'sessions released after --idle-ms without a message', registers: [this.registry] });
  readonly batches = new Counter({ name: 'splitllm_step_batches_total', help: 'back-segment runs of decode steps', registers: [this.registry] });
  readonly batchedSteps = new Counter({ name: 'splitllm_batched_steps_total', help: 'decode steps run in those batches', registers: [this.registry] });
  readonly maxBatch = new Gauge({ name: 'splitllm_step_batch_max', help: 'largest batch of decode steps run so far', registers: [this.registry] });
  readonly errors = new Counter({ name: 'splitllm_errors_total', help: 'errors answered, by wire code', labelNames: ['code'] as const, registers: [this.registry] });
  readonly stepMs = new Histogram({
    name: 'splitllm_step_ms',
    help: 'milliseconds in the cloud per prefill or step: decode, back segment, sampling',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
    registers: [this.registry],
  });
  private largestBatch = 0;

  countError(code: ErrorLabel): void {
    this.errors.inc({ code });
  }
  batch(size: number): void {
    this.batches.inc();
    this.batchedSteps.inc(size);
    if (size > this.largestBatch) {
      this.largestBatch = size;
      this.maxBatch.set(size);
    }
  }
  text(): Promise<string> {
    return this.registry.metrics();
  }
  get contentType(): string {
    return this.registry.contentType;
  }
}

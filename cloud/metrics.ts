/**
 * The cloud's Prometheus metrics (prom-client, one registry per server), named as Prometheus asks:
 * base units (`_seconds`, `_bytes`), `_total` on counters, `# HELP` on every family, and the default
 * process metrics. Counters, gauges and fixed-bucket histograms only, so memory stays constant however
 * long the server runs; gauges of sessions by state and by tenant are computed at scrape time. Label
 * sets are bounded: error codes are the wire codes of docs/PROTOCOL.md plus a few transport and
 * upgrade labels, tenants are those of the configuration.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { WireCode } from '../shared/protocol/index.js';

/** The bounded label set of splitllm_errors_total: wire codes, socket errors and upgrade refusals. */
export type ErrorLabel = WireCode | 'frame_too_large' | 'ws_protocol' | 'tenant_limit' | 'draining' | 'bad_session_id' | 'socket_limit' | 'address_limit';

/** What the scrape reads from the session store. */
export interface SessionCounts {
  connected: number;
  waiting: number;
  byTenant: Map<string, number>;
  /** KV bytes the held sessions reserve */
  kvReserved: number;
}

const SECONDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];

export class CloudMetrics {
  readonly registry = new Registry();
  private counts: () => SessionCounts = () => ({ connected: 0, waiting: 0, byTenant: new Map(), kvReserved: 0 });
  readonly connectionsOpen = new Gauge({ name: 'splitllm_connections_open', help: 'WebSocket connections open now, with or without a session', registers: [this.registry] });
  readonly sessionsHeld = new Gauge({ name: 'splitllm_sessions_held', help: 'sessions held now (connected or waiting to be resumed), each with its KV cache', registers: [this.registry] });
  readonly sessionsByState = new Gauge({
    name: 'splitllm_sessions',
    help: 'sessions held now, by state: connected, or waiting for a resume',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const c = this.counts();
      this.sessionsByState.set({ state: 'connected' }, c.connected);
      this.sessionsByState.set({ state: 'waiting' }, c.waiting);
    },
  });
  /** by tenant name: registered only when the server is told to show tenant names (--metrics-tenants) */
  readonly sessionsByTenant: Gauge<'tenant'> = new Gauge({
    name: 'splitllm_tenant_sessions',
    help: 'sessions held now, by tenant',
    labelNames: ['tenant'] as const,
    registers: [],
    collect: () => {
      this.sessionsByTenant.reset();
      for (const [tenant, n] of this.counts().byTenant) this.sessionsByTenant.set({ tenant }, n);
    },
  });
  readonly kvBudget = new Gauge({ name: 'splitllm_kv_budget_bytes', help: 'bytes of KV cache all sessions together may reserve (--kv-memory)', registers: [this.registry] });
  readonly kvReserved: Gauge = new Gauge({
    name: 'splitllm_kv_reserved_bytes',
    help: 'bytes of KV cache the held sessions reserve (each its position limit at its split)',
    registers: [this.registry],
    collect: (): void => this.kvReserved.set(this.counts().kvReserved),
  });
  readonly sessionsTotal = new Counter({ name: 'splitllm_sessions_total', help: 'sessions started', registers: [this.registry] });
  readonly tokens = new Counter({ name: 'splitllm_tokens_total', help: 'tokens generated', registers: [this.registry] });
  readonly bytesIn = new Counter({ name: 'splitllm_received_bytes_total', help: 'bytes of frames received from edges', registers: [this.registry] });
  readonly bytesOut = new Counter({ name: 'splitllm_sent_bytes_total', help: 'bytes of frames sent to edges', registers: [this.registry] });
  readonly resumes = new Counter({ name: 'splitllm_resumes_total', help: 'sessions resumed on a new connection', registers: [this.registry] });
  readonly reclaims = new Counter({ name: 'splitllm_memory_reclaims_total', help: 'major garbage collections run to give back the memory of released sessions', registers: [this.registry] });
  readonly expired = new Counter({ name: 'splitllm_sessions_expired_total', help: 'sessions released after --idle-ms without a message', registers: [this.registry] });
  readonly batches = new Counter({ name: 'splitllm_step_batches_total', help: 'back-segment runs of decode steps', registers: [this.registry] });
  readonly batchedSteps = new Counter({ name: 'splitllm_batched_steps_total', help: 'decode steps run in those batches', registers: [this.registry] });
  readonly maxBatch = new Gauge({ name: 'splitllm_step_batch_max', help: 'largest batch of decode steps run so far', registers: [this.registry] });
  readonly batchSize = new Histogram({ name: 'splitllm_step_batch_size', help: 'decode steps per back-segment run', buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers: [this.registry] });
  readonly probeBytes = new Gauge({ name: 'splitllm_probe_bytes_in_flight', help: 'bytes of link-probe replies not yet sent, across all connections (bounded server-wide)', registers: [this.registry] });
  readonly throttled = new Counter({ name: 'splitllm_throttled_seconds_total', help: 'seconds connections were made to wait for being over their frame or byte rate (--max-frame-rate, --max-byte-rate)', registers: [this.registry] });
  readonly errors = new Counter({ name: 'splitllm_errors_total', help: 'errors answered and upgrades refused, by code', labelNames: ['code'] as const, registers: [this.registry] });
  readonly stepSeconds = new Histogram({
    name: 'splitllm_step_duration_seconds',
    help: 'seconds in the cloud per prefill or step: decode, back segment, sampling',
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({ name: 'splitllm_step_queue_wait_seconds', help: 'seconds a decode step waited for its batch to run', buckets: SECONDS, registers: [this.registry] });
  readonly firstToken = new Histogram({
    name: 'splitllm_time_to_first_token_seconds',
    help: "seconds from a session's hello to its first token leaving the cloud (back-segment build on first use included)",
    buckets: [...SECONDS, 10, 30],
    registers: [this.registry],
  });
  private largestBatch = 0;

  /** `tenantNames`: publish the per-tenant series (whoever can scrape /metrics then learns the tenants' names) */
  constructor(tenantNames = false) {
    collectDefaultMetrics({ register: this.registry });
    if (tenantNames) this.registry.registerMetric(this.sessionsByTenant);
  }

  /** Where the per-state and per-tenant session gauges read from at scrape time. */
  watch(counts: () => SessionCounts): void {
    this.counts = counts;
  }

  countError(code: ErrorLabel): void {
    this.errors.inc({ code });
  }
  batch(size: number): void {
    this.batches.inc();
    this.batchedSteps.inc(size);
    this.batchSize.observe(size);
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

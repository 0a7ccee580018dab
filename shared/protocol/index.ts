/** The edge ⇄ cloud protocol (docs/PROTOCOL.md): messages, framing, the checked parser and wire errors. */
export * from './messages.js';
export * from './errors.js';
export { encodeFrame, packKv, unpackKv, MAX_HEADER_BYTES } from './frame.js';
export { parseCloudFrame, parseEdgeFrame, LIMITS } from './parse.js';
export { isSessionId, newSessionId, sessionUrl, SESSION_ID_PATTERN } from './session-id.js';

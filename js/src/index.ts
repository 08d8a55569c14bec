// xoq for browsers and Node: the wire codecs of xoq's robot protocols, and clients for serial
// ports and CAN buses served over a MoQ relay.

export { VARINT_MAX, type VarintRead, encodeVarint, putVarint, readVarint, varintSize } from "./varint.js";
export {
  type CanFrame,
  CodecError,
  EFF_MAX,
  FRAME_HEADER_LEN,
  MAX_BATCH,
  SFF_MAX,
  canFrame,
  decodeBatch,
  encodeBatch,
  fdLenRoundUp,
  unixMicros,
  validateFrame,
  withToken,
} from "./can.js";
export {
  CLEAR_ERROR,
  DAMIAO_LIMITS,
  DISABLE,
  type DamiaoFeedback,
  type DamiaoLimits,
  type DamiaoModel,
  type DamiaoMotor,
  ENABLE,
  KD_MAX,
  KP_MAX,
  OPENARM_MOTORS,
  PARAM_ID,
  SET_ZERO,
  decodeFeedback,
  encodeMit,
  floatToUint,
  refreshRequest,
  uintToFloat,
} from "./damiao.js";
// Feetech names are exported both flat and as a namespace (`feetech.READ`), since READ and
// WRITE read ambiguously next to the CAN and MoQ names.
export * from "./feetech.js";
export * as feetech from "./feetech.js";
export {
  ATTEMPT_TIMEOUT_MS,
  type ConnectOptions,
  type Connection,
  DATA_TRACK,
  GROUP_IDLE_MS,
  GROUP_MAX_FRAMES,
  Inbox,
  MAX_AGE_MS,
  RECONNECT_BACKOFF_MS,
  RECONNECT_DEADLINE_MS,
  Relay,
  type RelayCounters,
  type RelayOptions,
  type RelayState,
  RelayStateEvent,
  type ReaderEvent,
  TrackReader,
  TrackWriter,
  connect,
  jwtOf,
  publishTrack,
  redactUrl,
  scrubToken,
  splitAddress,
  withJwt,
  writerId,
} from "./moq.js";
export {
  CTL_TRACK,
  type Ctl,
  MAX_STRING,
  MAX_WRITER,
  type WriterMsg,
  ctlWriter,
  dataFrame,
  decodeCtl,
  decodeWriterMsg,
  encodeCtl,
  encodeWriterMsg,
} from "./relay.js";
export {
  type ClockEstimate,
  ClockEstimator,
  LinkClosedError,
  type LinkCounters,
  LinkDownError,
  LinkError,
  type LinkState,
  LinkStateEvent,
  NoticeEvent,
  PENDING_MAX,
  PING_EVERY_MS,
  ReadOnlyError,
  RefusedError,
  RelaySession,
  SYNC_WAIT_MS,
  type SessionOptions,
  nowUs,
} from "./session.js";
export { type OpenOptions, type PeerService, type RelayPeer, openRelayPeer } from "./peer.js";
export {
  SERIAL_INBOX_BYTES,
  SERIAL_MAX_CHUNK,
  SERIAL_WRITE_WAIT_MS,
  SERIAL_WRITES_WAITING,
  type SerialOptions,
  type SerialStream,
  openSerial,
} from "./serial.js";
export { CAN_INBOX_FRAMES, type CanBus, type CanOptions, openCan } from "./canbus.js";

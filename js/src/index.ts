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
  type ConnectOptions,
  type Connection,
  DATA_TRACK,
  GROUP_IDLE_MS,
  GROUP_MAX_FRAMES,
  Inbox,
  MAX_AGE_MS,
  type OpenOptions,
  TrackReader,
  TrackWriter,
  connect,
  publishTrack,
  splitAddress,
  writerId,
} from "./moq.js";
export { SERIAL_INBOX_BYTES, type SerialStream, openSerial } from "./serial.js";
export { CAN_INBOX_FRAMES, type CanBus, type CanOptions, openCan } from "./canbus.js";

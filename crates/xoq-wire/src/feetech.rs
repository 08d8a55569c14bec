//! Feetech STS/SCS servo packets ("protocol 0"), as spoken on an SO-100/SO-101 arm's bus.
//!
//! Instruction: `FF FF id len instr params… chk`; status: `FF FF id len err params… chk`;
//! `len` = params + 2; `chk` = `!(id + len + instr_or_err + Σparams)`. Used by the demo's
//! self-check, benchmarks and the browser pages' test vectors; the simulator in xoq-device
//! parses and answers with these functions ([`checksum`], [`put_packet`]).

use bytes::BufMut;

use crate::DecodeError;

/// PING instruction.
pub const PING: u8 = 0x01;
/// READ instruction (addr, len).
pub const READ: u8 = 0x02;
/// WRITE instruction (addr, data…).
pub const WRITE: u8 = 0x03;
/// REG_WRITE instruction (addr, data…): stored until [`ACTION`].
pub const REG_WRITE: u8 = 0x04;
/// ACTION instruction: apply the writes stored by [`REG_WRITE`].
pub const ACTION: u8 = 0x05;
/// RESET instruction.
pub const RESET: u8 = 0x06;
/// SYNC_READ instruction (addr, len, ids…).
pub const SYNC_READ: u8 = 0x82;
/// SYNC_WRITE instruction (addr, len, then id + data per servo).
pub const SYNC_WRITE: u8 = 0x83;
/// Broadcast id.
pub const BROADCAST: u8 = 0xFE;
/// Address of Present_Position (2 bytes).
pub const PRESENT_POSITION: u8 = 56;
/// Address of Goal_Position (2 bytes).
pub const GOAL_POSITION: u8 = 42;
/// Address of Torque_Enable (1 byte).
pub const TORQUE_ENABLE: u8 = 40;
/// Address of Model_Number (2 bytes; 777 for STS3215).
pub const MODEL_NUMBER: u8 = 3;

/// Most params one packet carries: the length byte holds params + 2.
pub const MAX_PARAMS: usize = 253;

fn byte_sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// Protocol checksum of a packet's bytes after the header (`id len instr_or_err params…`):
/// the bitwise NOT of their wrapping byte sum.
pub fn checksum(bytes: &[u8]) -> u8 {
    !byte_sum(bytes)
}

/// Append one packet to `buf`: an instruction (`code` = the instruction) or a status packet
/// (`code` = the error bits), which share a layout. Params longer than [`MAX_PARAMS`] are
/// truncated (the length byte cannot express more).
pub fn put_packet(buf: &mut impl BufMut, id: u8, code: u8, params: &[u8]) {
    let params = &params[..params.len().min(MAX_PARAMS)];
    // At most MAX_PARAMS + 2 = 255, so the cast is exact.
    let len = params.len() as u8 + 2;
    buf.put_slice(&[0xFF, 0xFF, id, len, code]);
    buf.put_slice(params);
    let sum = byte_sum(&[id, len, code]).wrapping_add(byte_sum(params));
    buf.put_u8(!sum);
}

/// Encode an instruction packet. Params longer than [`MAX_PARAMS`] are truncated.
pub fn instruction(id: u8, instr: u8, params: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(params.len().min(MAX_PARAMS) + 6);
    put_packet(&mut p, id, instr, params);
    p
}

/// A decoded status packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Servo id.
    pub id: u8,
    /// Error bits (0 = fine).
    pub error: u8,
    /// Returned data.
    pub params: Vec<u8>,
}

/// Decode one status packet from the front of `buf`, skipping bytes before a header.
/// Returns the packet and the number of bytes consumed, `Short` if incomplete, or
/// `Invalid` on a bad checksum.
pub fn decode_status(buf: &[u8]) -> Result<(Status, usize), DecodeError> {
    let start = buf
        .windows(2)
        .position(|w| w == [0xFF, 0xFF])
        .ok_or(DecodeError::Short)?;
    let p = &buf[start..];
    if p.len() < 4 {
        return Err(DecodeError::Short);
    }
    let len = p[3] as usize;
    if len < 2 {
        return Err(DecodeError::Invalid {
            field: "length",
            reason: "shorter than a status packet",
        });
    }
    let total = 4 + len;
    if p.len() < total {
        return Err(DecodeError::Short);
    }
    if checksum(&p[2..total - 1]) != p[total - 1] {
        return Err(DecodeError::Invalid {
            field: "checksum",
            reason: "mismatch",
        });
    }
    Ok((
        Status {
            id: p[2],
            error: p[4],
            params: p[5..total - 1].to_vec(),
        },
        start + total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ping_snapshot() {
        assert_eq!(
            instruction(1, PING, &[]),
            [0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB]
        );
        let (s, n) = decode_status(&[0x00, 0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC]).expect("status");
        assert_eq!((s.id, s.error, s.params.len(), n), (1, 0, 0, 7));
    }

    #[test]
    fn checksum_snapshot() {
        assert_eq!(checksum(&[0x01, 0x02, 0x01]), 0xFB);
        // The sum wraps: 0xFE + 0x04 + 0x03 + 0xFF + 0xFF = 0x303.
        assert_eq!(checksum(&[0xFE, 0x04, 0x03, 0xFF, 0xFF]), 0xFC);
        assert_eq!(checksum(&[]), 0xFF);
    }

    #[test]
    fn put_packet_appends_status_packets() {
        // A status packet after other bytes: READ of Model_Number answered with 777 (0x0309).
        let mut out = vec![0xAA];
        put_packet(&mut out, 1, 0, &[0x09, 0x03]);
        assert_eq!(out, [0xAA, 0xFF, 0xFF, 0x01, 0x04, 0x00, 0x09, 0x03, 0xEE]);
        // Params past MAX_PARAMS are cut so the length byte stays truthful.
        let mut long = Vec::new();
        put_packet(&mut long, 2, 0, &[7; MAX_PARAMS + 5]);
        assert_eq!(long.len(), MAX_PARAMS + 6);
        assert_eq!(long[3], 0xFF);
        let (s, n) = decode_status(&long).expect("status");
        assert_eq!((s.id, s.params.len(), n), (2, MAX_PARAMS, long.len()));
    }

    proptest! {
        #[test]
        fn decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((s, n)) = decode_status(&bytes) {
                prop_assert!(n <= bytes.len());
                prop_assert!(s.params.len() < 256);
            }
        }

        #[test]
        fn roundtrip(id in 0u8..0xFE, err: u8, params in proptest::collection::vec(any::<u8>(), 0..100)) {
            // A status packet has the instruction packet's layout with err in place of instr.
            let p = instruction(id, err, &params);
            let (s, n) = decode_status(&p).expect("decodes");
            prop_assert_eq!(n, p.len());
            prop_assert_eq!(s, Status { id, error: err, params });
        }

        #[test]
        fn checksum_closes_every_packet(
            id: u8,
            code: u8,
            params in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut p = Vec::new();
            put_packet(&mut p, id, code, &params);
            prop_assert_eq!(&p, &instruction(id, code, &params));
            prop_assert_eq!(p.len(), params.len().min(MAX_PARAMS) + 6);
            let (chk, body) = p[2..].split_last().expect("non-empty");
            prop_assert_eq!(checksum(body), *chk);
        }
    }
}

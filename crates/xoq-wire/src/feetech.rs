//! Feetech STS/SCS servo packets ("protocol 0"), as spoken on an SO-100/SO-101 arm's bus.
//!
//! Instruction: `FF FF id len instr params… chk`; status: `FF FF id len err params… chk`;
//! `len` = params + 2; `chk` = `!(id + len + instr_or_err + Σparams)`. Used by the demo's
//! self-check, benchmarks and the browser pages' test vectors; the simulator in xoq-device
//! parses the same format.

use crate::DecodeError;

/// PING instruction.
pub const PING: u8 = 0x01;
/// READ instruction (addr, len).
pub const READ: u8 = 0x02;
/// WRITE instruction (addr, data…).
pub const WRITE: u8 = 0x03;
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

fn checksum(bytes: &[u8]) -> u8 {
    !bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// Encode an instruction packet. Params longer than 253 bytes are truncated (the length
/// byte cannot express more).
pub fn instruction(id: u8, instr: u8, params: &[u8]) -> Vec<u8> {
    let params = &params[..params.len().min(253)];
    let mut p = Vec::with_capacity(params.len() + 6);
    p.extend_from_slice(&[0xFF, 0xFF, id, params.len() as u8 + 2, instr]);
    p.extend_from_slice(params);
    p.push(checksum(&p[2..]));
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
    }
}

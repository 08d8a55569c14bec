//! The frame model: [`CanFrame`], [`TimedFrame`], their limits and validation.

use bytes::Bytes;

use crate::coding::DecodeError;

/// Largest standard (11-bit) identifier.
pub const SFF_MAX: u32 = 0x7FF;
/// Largest extended (29-bit) identifier.
pub const EFF_MAX: u32 = 0x1FFF_FFFF;

pub(super) const CLASSIC_MAX_LEN: usize = 8;
pub(super) const FD_MAX_LEN: usize = 64;
/// CAN FD lengths above 8 (DLC 9..=15).
const FD_LONG_LENS: [usize; 7] = [12, 16, 20, 24, 32, 48, 64];

/// Smallest valid CAN FD data length that holds `n` bytes (`0..=8`, 12, 16, 20, 24, 32, 48,
/// 64), or `None` if `n > 64`. Use it to pad data before [`CanFrame::new_fd`].
pub fn fd_len_round_up(n: usize) -> Option<usize> {
    if n <= CLASSIC_MAX_LEN {
        return Some(n);
    }
    FD_LONG_LENS.iter().copied().find(|&l| l >= n)
}

fn is_fd_len(n: usize) -> bool {
    fd_len_round_up(n) == Some(n)
}

/// Why a [`CanFrame`] is not a valid CAN frame, or why candump text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A standard id over 11 bits.
    #[error("standard CAN id 0x{0:X} is over 0x7FF; set `extended` for a 29-bit id")]
    StandardIdTooLarge(u32),
    /// An id over 29 bits.
    #[error("CAN id 0x{0:X} is over the 29-bit maximum 0x1FFFFFFF")]
    IdTooLarge(u32),
    /// Classic frame with more than 8 data bytes.
    #[error("a classic CAN frame carries at most 8 data bytes, not {0}")]
    ClassicTooLong(usize),
    /// FD frame whose length has no DLC.
    #[error(
        "{0} bytes is not a CAN FD length (0-8, 12, 16, 20, 24, 32, 48 or 64); pad the data to fd_len_round_up({0})"
    )]
    InvalidFdLength(usize),
    /// BRS or ESI set on a classic frame.
    #[error("BRS and ESI are CAN FD flags but the frame is not FD")]
    FdFlagsWithoutFd,
    /// RTR set on an FD frame.
    #[error("CAN FD has no remote (RTR) frames")]
    RemoteFd,
    /// RTR frame with data bytes.
    #[error("a remote (RTR) frame carries no data; its requested length goes in rtr_len")]
    RemoteWithData,
    /// RTR frame requesting more than 8 bytes.
    #[error("a remote (RTR) frame requests at most 8 bytes, not {0}")]
    RemoteLenTooLong(usize),
    /// `rtr_len` set on a frame that is not remote.
    #[error("rtr_len must be 0 unless the frame is a remote (RTR) frame")]
    RtrLenWithoutRtr,
    /// Error frame also marked extended, remote or FD.
    #[error("an error frame cannot be extended, remote or FD (its id is the error class)")]
    ErrorFrameFlags,
    /// Text that is not candump/cansend frame syntax.
    #[error("invalid candump frame: {0}")]
    Syntax(&'static str),
}

impl FrameError {
    /// The same problem as a wire decoding error (decoders report static field names).
    pub(super) fn to_decode_error(&self) -> DecodeError {
        let (field, reason) = match self {
            FrameError::StandardIdTooLarge(_) => ("id", "standard id over 0x7FF"),
            FrameError::IdTooLarge(_) => ("id", "id over 29 bits"),
            FrameError::ClassicTooLong(_) => ("len", "classic frame over 8 bytes"),
            FrameError::InvalidFdLength(_) => ("len", "not a CAN FD length"),
            FrameError::FdFlagsWithoutFd => ("flags", "BRS/ESI on a classic frame"),
            FrameError::RemoteFd => ("flags", "remote FD frame"),
            FrameError::RemoteWithData => ("len", "remote frame with data"),
            FrameError::RemoteLenTooLong(_) => ("len", "remote frame over 8 bytes"),
            FrameError::RtrLenWithoutRtr => ("len", "rtr_len on a data frame"),
            FrameError::ErrorFrameFlags => ("flags", "error frame marked extended, RTR or FD"),
            FrameError::Syntax(r) => ("frame", *r),
        };
        invalid(field, reason)
    }
}

pub(super) fn invalid(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Invalid { field, reason }
}

/// One CAN or CAN FD frame. Fields are public; [`validate`](Self::validate) checks that they
/// describe a real frame (the constructors and every decoder only produce valid frames).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CanFrame {
    /// Identifier: 11 bits if standard, 29 bits if extended; for an error frame the error
    /// class bits (SocketCAN's `CAN_ERR_*` without `CAN_ERR_FLAG`).
    pub id: u32,
    /// 29-bit (extended) identifier.
    pub extended: bool,
    /// Remote transmission request (classic only): no data, [`rtr_len`](Self::rtr_len) bytes
    /// requested.
    pub rtr: bool,
    /// Error frame reported by the controller (classic, standard; data holds the details).
    pub error: bool,
    /// CAN FD frame.
    pub fd: bool,
    /// Bit-rate switch for the data phase (FD only).
    pub brs: bool,
    /// Error state indicator: the transmitter was error passive (FD only).
    pub esi: bool,
    /// Data bytes: 0..=8 for classic frames, a valid FD length for FD frames, empty for RTR.
    pub data: Bytes,
    /// Length requested by a remote frame (0..=8); 0 on any other frame.
    pub rtr_len: u8,
}

impl CanFrame {
    /// Classic data frame; the id is extended iff it is over 0x7FF.
    pub fn new(id: u32, data: impl Into<Bytes>) -> Result<Self, FrameError> {
        let f = CanFrame {
            id,
            extended: id > SFF_MAX,
            data: data.into(),
            ..CanFrame::default()
        };
        f.validate()?;
        Ok(f)
    }

    /// CAN FD data frame; the id is extended iff it is over 0x7FF. The length must be a valid
    /// FD length: nothing is padded silently (see [`fd_len_round_up`]).
    pub fn new_fd(id: u32, data: impl Into<Bytes>, brs: bool) -> Result<Self, FrameError> {
        let f = CanFrame {
            id,
            extended: id > SFF_MAX,
            fd: true,
            brs,
            data: data.into(),
            ..CanFrame::default()
        };
        f.validate()?;
        Ok(f)
    }

    /// Remote frame requesting `len` bytes; the id is extended iff it is over 0x7FF.
    pub fn remote(id: u32, len: u8) -> Result<Self, FrameError> {
        let f = CanFrame {
            id,
            extended: id > SFF_MAX,
            rtr: true,
            rtr_len: len,
            ..CanFrame::default()
        };
        f.validate()?;
        Ok(f)
    }

    /// Check every invariant: id range for its kind, FD-only flags, no remote FD frames, data
    /// length rules, and error frames being classic standard frames.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.rtr && !self.data.is_empty() {
            return Err(FrameError::RemoteWithData);
        }
        if !self.rtr && self.rtr_len != 0 {
            return Err(FrameError::RtrLenWithoutRtr);
        }
        self.check_shape(self.wire_len())
    }

    /// The invariants that do not depend on the data bytes themselves, with `len` the length
    /// on the wire. Split out so the decoder can refuse a bad header before reading data.
    pub(super) fn check_shape(&self, len: usize) -> Result<(), FrameError> {
        if self.error {
            if self.extended || self.rtr || self.fd {
                return Err(FrameError::ErrorFrameFlags);
            }
            if self.id > EFF_MAX {
                return Err(FrameError::IdTooLarge(self.id));
            }
        } else if self.extended {
            if self.id > EFF_MAX {
                return Err(FrameError::IdTooLarge(self.id));
            }
        } else if self.id > SFF_MAX {
            return Err(FrameError::StandardIdTooLarge(self.id));
        }
        if self.rtr && self.fd {
            return Err(FrameError::RemoteFd);
        }
        if (self.brs || self.esi) && !self.fd {
            return Err(FrameError::FdFlagsWithoutFd);
        }
        if self.fd {
            if !is_fd_len(len) {
                return Err(FrameError::InvalidFdLength(len));
            }
        } else if len > CLASSIC_MAX_LEN {
            return Err(if self.rtr {
                FrameError::RemoteLenTooLong(len)
            } else {
                FrameError::ClassicTooLong(len)
            });
        }
        Ok(())
    }

    /// Length the frame declares: the requested length for RTR, else the data length.
    fn wire_len(&self) -> usize {
        if self.rtr {
            usize::from(self.rtr_len)
        } else {
            self.data.len()
        }
    }
}

/// A frame with the time it was received (or, from a client, sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TimedFrame {
    /// The frame.
    pub frame: CanFrame,
    /// Microseconds since the Unix epoch: the server's receive time for frames from the bus,
    /// carried end to end; the client's send time in [`ClientMsg::Send`](super::ClientMsg::Send).
    pub timestamp_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::can::testing::FD_LENS;

    #[test]
    fn fd_len_round_up_values() {
        assert_eq!(fd_len_round_up(0), Some(0));
        assert_eq!(fd_len_round_up(8), Some(8));
        assert_eq!(fd_len_round_up(9), Some(12));
        assert_eq!(fd_len_round_up(13), Some(16));
        assert_eq!(fd_len_round_up(33), Some(48));
        assert_eq!(fd_len_round_up(64), Some(64));
        assert_eq!(fd_len_round_up(65), None);
        let valid: Vec<usize> = (0..=64).filter(|&n| is_fd_len(n)).collect();
        assert_eq!(valid, FD_LENS);
    }

    #[test]
    fn validation_rejects() {
        let std_over = CanFrame {
            id: 0x800,
            ..CanFrame::default()
        };
        assert_eq!(
            std_over.validate(),
            Err(FrameError::StandardIdTooLarge(0x800))
        );
        let ext_over = CanFrame {
            id: 0x2000_0000,
            extended: true,
            ..CanFrame::default()
        };
        assert_eq!(
            ext_over.validate(),
            Err(FrameError::IdTooLarge(0x2000_0000))
        );
        assert_eq!(
            CanFrame::new(0x2000_0000, Bytes::new()),
            Err(FrameError::IdTooLarge(0x2000_0000))
        );
        assert_eq!(
            CanFrame::new(1, vec![0; 9]),
            Err(FrameError::ClassicTooLong(9))
        );
        assert_eq!(
            CanFrame::new_fd(1, vec![0; 13], false),
            Err(FrameError::InvalidFdLength(13))
        );
        assert_eq!(
            CanFrame::new_fd(1, vec![0; 65], false),
            Err(FrameError::InvalidFdLength(65))
        );
        let brs_classic = CanFrame {
            brs: true,
            ..CanFrame::default()
        };
        assert_eq!(brs_classic.validate(), Err(FrameError::FdFlagsWithoutFd));
        let esi_classic = CanFrame {
            esi: true,
            ..CanFrame::default()
        };
        assert_eq!(esi_classic.validate(), Err(FrameError::FdFlagsWithoutFd));
        let rtr_fd = CanFrame {
            rtr: true,
            fd: true,
            ..CanFrame::default()
        };
        assert_eq!(rtr_fd.validate(), Err(FrameError::RemoteFd));
        assert_eq!(CanFrame::remote(1, 9), Err(FrameError::RemoteLenTooLong(9)));
        let rtr_data = CanFrame {
            rtr: true,
            data: Bytes::from_static(b"x"),
            ..CanFrame::default()
        };
        assert_eq!(rtr_data.validate(), Err(FrameError::RemoteWithData));
        let stray_len = CanFrame {
            rtr_len: 2,
            ..CanFrame::default()
        };
        assert_eq!(stray_len.validate(), Err(FrameError::RtrLenWithoutRtr));
        let err_ext = CanFrame {
            error: true,
            extended: true,
            ..CanFrame::default()
        };
        assert_eq!(err_ext.validate(), Err(FrameError::ErrorFrameFlags));
        // The messages explain what to do.
        assert!(
            FrameError::StandardIdTooLarge(0x800)
                .to_string()
                .contains("extended")
        );
        assert!(
            FrameError::InvalidFdLength(13)
                .to_string()
                .contains("fd_len_round_up")
        );
    }
}

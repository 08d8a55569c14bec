//! Why a server refused a session or a request: one set of stable codes for every service
//! (serial, CAN, relay writers, and the services to come), so a client reads a refusal the
//! same way whatever it is connected to.

/// Why a server refused. The numeric value ([`to_code`](Self::to_code)) is the stable wire
/// code; unknown codes from a newer peer are kept as [`Other`](Self::Other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseCode {
    /// Another client controls the device and the server does not allow takeover (1).
    Busy,
    /// The client's endpoint id is not on the server's allowlist (2).
    NotAllowed,
    /// Incompatible protocol version: upgrade the older side (3).
    Version,
    /// The device or interface is not available right now (unplugged, down); retry later (4).
    Unavailable,
    /// The request cannot be served as asked: settings the device cannot take, a CAN FD
    /// frame on a classic interface (5).
    Unsupported,
    /// The server does not accept writes through this path (relay writes off) (6).
    WritesOff,
    /// A code this version does not know.
    Other(u16),
}

impl RefuseCode {
    /// Stable wire code.
    pub const fn to_code(self) -> u16 {
        match self {
            RefuseCode::Busy => 1,
            RefuseCode::NotAllowed => 2,
            RefuseCode::Version => 3,
            RefuseCode::Unavailable => 4,
            RefuseCode::Unsupported => 5,
            RefuseCode::WritesOff => 6,
            RefuseCode::Other(c) => c,
        }
    }

    /// Inverse of [`to_code`](Self::to_code); unknown codes are kept as `Other`.
    pub const fn from_code(c: u16) -> Self {
        match c {
            1 => RefuseCode::Busy,
            2 => RefuseCode::NotAllowed,
            3 => RefuseCode::Version,
            4 => RefuseCode::Unavailable,
            5 => RefuseCode::Unsupported,
            6 => RefuseCode::WritesOff,
            c => RefuseCode::Other(c),
        }
    }

    /// Whether trying again later can succeed without anyone changing a configuration.
    pub const fn is_transient(self) -> bool {
        matches!(self, RefuseCode::Busy | RefuseCode::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::RefuseCode;

    #[test]
    fn codes_are_stable_and_round_trip() {
        let known = [
            (RefuseCode::Busy, 1),
            (RefuseCode::NotAllowed, 2),
            (RefuseCode::Version, 3),
            (RefuseCode::Unavailable, 4),
            (RefuseCode::Unsupported, 5),
            (RefuseCode::WritesOff, 6),
        ];
        for (r, c) in known {
            assert_eq!(r.to_code(), c);
            assert_eq!(RefuseCode::from_code(c), r);
        }
        for c in [0, 7, 999, u16::MAX] {
            assert_eq!(RefuseCode::from_code(c), RefuseCode::Other(c));
            assert_eq!(RefuseCode::from_code(c).to_code(), c);
        }
    }
}

//! `xoq vectors` (hidden): codec test vectors produced by the Rust codecs, as JSON.
//!
//! The JavaScript package's unit tests decode and encode these, so the two implementations
//! are checked against each other in every test run and cannot drift apart.

use std::fmt::Write as _;

use bytes::Bytes;
use xoq_wire::can::{CanFrame, TimedFrame, encode_track_frame};
use xoq_wire::damiao::{self, CMD_DISABLE, CMD_ENABLE, CMD_SET_ZERO, Feedback, MotorModel};
use xoq_wire::feetech;

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn frame_json(t: &TimedFrame) -> String {
    let f = &t.frame;
    format!(
        r#"{{"id":{},"extended":{},"rtr":{},"error":{},"fd":{},"brs":{},"esi":{},"data":"{}","rtr_len":{},"timestamp_us":"{}"}}"#,
        f.id,
        f.extended,
        f.rtr,
        f.error,
        f.fd,
        f.brs,
        f.esi,
        hex(&f.data),
        f.rtr_len,
        t.timestamp_us
    )
}

fn model_name(m: MotorModel) -> String {
    format!("{m:?}")
}

/// The vectors, as one JSON document.
pub(super) fn json() -> anyhow::Result<String> {
    let mut out = String::from("{\n");

    // CAN batches (MoQ track frames = P2P batches).
    let t = |frame: CanFrame, ts: u64| TimedFrame {
        frame,
        timestamp_us: ts,
    };
    let error_frame = CanFrame {
        id: 0x004,
        error: true,
        data: Bytes::from_static(&[0, 0x10, 0, 0, 0, 0, 0, 0]),
        ..CanFrame::default()
    };
    let esi = CanFrame {
        esi: true,
        ..CanFrame::new_fd(0x43, vec![9u8; 12], false)?
    };
    let batches: Vec<(&str, Vec<TimedFrame>)> = vec![
        ("empty", vec![]),
        (
            "classic",
            vec![t(
                CanFrame::new(0x123, vec![0xDE, 0xAD, 0xBE, 0xEF])?,
                0x0102_0304_0506_0708,
            )],
        ),
        (
            "fd_brs_extended",
            vec![t(
                CanFrame::new_fd(0x1ABC_DEF0, (0u8..12).collect::<Vec<u8>>(), true)?,
                1,
            )],
        ),
        (
            "mixed",
            vec![
                t(
                    CanFrame::new(0x01, CMD_ENABLE.to_vec())?,
                    1_764_000_000_000_000,
                ),
                t(
                    CanFrame::new_fd(0x7FF, vec![0xAA; 64], true)?,
                    1_764_000_000_000_001,
                ),
                t(CanFrame::remote(0x321, 4)?, 2),
                t(error_frame, 3),
                t(esi, u64::MAX),
                t(CanFrame::new(0x1FFF_FFFF, vec![])?, 0),
            ],
        ),
    ];
    out.push_str("  \"can_batches\": [\n");
    for (i, (name, frames)) in batches.iter().enumerate() {
        let mut b = Vec::new();
        encode_track_frame(frames, &mut b);
        let list: Vec<String> = frames.iter().map(frame_json).collect();
        let _ = writeln!(
            out,
            "    {{\"name\":\"{name}\",\"hex\":\"{}\",\"frames\":[{}]}}{}",
            hex(&b),
            list.join(","),
            if i + 1 < batches.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");

    // Bytes every decoder must refuse (and not crash on).
    let invalid: [(&str, &str); 6] = [
        ("truncated_header", "0100"),
        ("count_beyond_bytes", "05"),
        ("bad_flags", "01c00000012300000000000000000100"),
        (
            "classic_too_long",
            "010000000123000000000000000009000102030405060708",
        ),
        (
            "fd_bad_length",
            "01080000012300000000000000000900010203040506070809",
        ),
        ("trailing_bytes", "0000"),
    ];
    out.push_str("  \"can_invalid\": [\n");
    for (i, (name, h)) in invalid.iter().enumerate() {
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&h[j..j + 2], 16))
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(
            xoq_wire::can::decode_track_frame(&bytes).is_err(),
            "invalid vector {name} decodes"
        );
        let _ = writeln!(
            out,
            "    {{\"name\":\"{name}\",\"hex\":\"{h}\"}}{}",
            if i + 1 < invalid.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");

    // Damiao MIT commands and feedback, per motor model.
    let commands: [(MotorModel, [f32; 5]); 6] = [
        (MotorModel::DM8009, [1.0, 0.0, 30.0, 1.0, 0.0]),
        (MotorModel::DM8009, [-12.5, -45.0, 0.0, 0.0, -54.0]),
        (MotorModel::DM4340, [12.5, 8.0, 500.0, 5.0, 28.0]),
        (MotorModel::DM4310, [0.25, -3.5, 12.0, 0.3, 1.5]),
        (MotorModel::DM4310, [99.0, 99.0, 999.0, 99.0, 99.0]),
        (MotorModel::DM10010, [-0.5, 2.0, 100.0, 2.5, -20.0]),
    ];
    out.push_str("  \"damiao_mit\": [\n");
    for (i, (m, [p, v, kp, kd, tq])) in commands.iter().enumerate() {
        let b = damiao::encode_mit(*m, *p, *v, *kp, *kd, *tq);
        let _ = writeln!(
            out,
            "    {{\"model\":\"{}\",\"p\":{p},\"v\":{v},\"kp\":{kp},\"kd\":{kd},\"t\":{tq},\"hex\":\"{}\"}}{}",
            model_name(*m),
            hex(&b),
            if i + 1 < commands.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");
    let feedback: [(MotorModel, Feedback); 4] = [
        (
            MotorModel::DM8009,
            Feedback {
                motor_id: 1,
                state: 1,
                position: 1.0,
                velocity: -2.0,
                torque: 3.0,
                temp_mos: 40,
                temp_rotor: 35,
            },
        ),
        (
            MotorModel::DM4340,
            Feedback {
                motor_id: 3,
                state: 0,
                position: -12.5,
                velocity: 8.0,
                torque: -28.0,
                temp_mos: 25,
                temp_rotor: 25,
            },
        ),
        (
            MotorModel::DM4310,
            Feedback {
                motor_id: 8,
                state: 0xD,
                position: 0.0,
                velocity: 0.0,
                torque: 0.0,
                temp_mos: 80,
                temp_rotor: 90,
            },
        ),
        (
            MotorModel::DM4310,
            Feedback {
                motor_id: 7,
                state: 1,
                position: 2.5,
                velocity: 29.9,
                torque: -9.99,
                temp_mos: 30,
                temp_rotor: 31,
            },
        ),
    ];
    out.push_str("  \"damiao_feedback\": [\n");
    for (i, (m, f)) in feedback.iter().enumerate() {
        let b = damiao::encode_feedback(*m, f);
        // The decoded values (after quantisation) are what a decoder must produce.
        let d = damiao::decode_feedback(*m, &b).ok_or_else(|| anyhow::anyhow!("decode"))?;
        let _ = writeln!(
            out,
            "    {{\"model\":\"{}\",\"hex\":\"{}\",\"motor_id\":{},\"state\":{},\"position\":{},\"velocity\":{},\"torque\":{},\"t_mos\":{},\"t_rotor\":{}}}{}",
            model_name(*m),
            hex(&b),
            d.motor_id,
            d.state,
            d.position,
            d.velocity,
            d.torque,
            d.temp_mos,
            d.temp_rotor,
            if i + 1 < feedback.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");
    let _ = writeln!(
        out,
        "  \"damiao_special\": {{\"enable\":\"{}\",\"disable\":\"{}\",\"set_zero\":\"{}\"}},",
        hex(&CMD_ENABLE),
        hex(&CMD_DISABLE),
        hex(&CMD_SET_ZERO)
    );
    out.push_str("  \"damiao_limits\": {");
    let limits: Vec<String> = MotorModel::ALL
        .iter()
        .map(|m| {
            let (p, v, t) = m.limits();
            format!("\"{}\":[{p},{v},{t}]", model_name(*m))
        })
        .collect();
    out.push_str(&limits.join(","));
    out.push_str("},\n");

    // Feetech instruction packets and status packets.
    let instrs: [(u8, u8, Vec<u8>); 5] = [
        (1, feetech::PING, vec![]),
        (1, feetech::READ, vec![feetech::PRESENT_POSITION, 2]),
        (6, feetech::WRITE, vec![feetech::GOAL_POSITION, 0x00, 0x08]),
        (
            feetech::BROADCAST,
            feetech::SYNC_READ,
            vec![56, 2, 1, 2, 3, 4, 5, 6],
        ),
        (
            feetech::BROADCAST,
            feetech::SYNC_WRITE,
            vec![42, 2, 1, 0xC4, 0x09, 2, 0xDC, 0x05],
        ),
    ];
    out.push_str("  \"feetech_instructions\": [\n");
    for (i, (id, instr, params)) in instrs.iter().enumerate() {
        let b = feetech::instruction(*id, *instr, params);
        let p: Vec<String> = params.iter().map(u8::to_string).collect();
        let _ = writeln!(
            out,
            "    {{\"id\":{id},\"instr\":{instr},\"params\":[{}],\"hex\":\"{}\"}}{}",
            p.join(","),
            hex(&b),
            if i + 1 < instrs.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");
    // Status packets as the simulated servos send them (the same layout, error byte first).
    let statuses: [(u8, u8, Vec<u8>); 3] = [
        (1, 0, vec![0x00, 0x08]),
        (6, 0x20, vec![]),
        (3, 0, vec![0x09, 0x03]),
    ];
    out.push_str("  \"feetech_status\": [\n");
    for (i, (id, err, params)) in statuses.iter().enumerate() {
        // A status packet is an instruction packet with the error byte in the instruction's
        // place: build it with the same encoder, then check the Rust decoder agrees.
        let b = feetech::instruction(*id, *err, params);
        let (st, used) = feetech::decode_status(&b).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(used == b.len() && st.params == *params, "status vector");
        let p: Vec<String> = params.iter().map(u8::to_string).collect();
        let _ = writeln!(
            out,
            "    {{\"id\":{id},\"error\":{err},\"params\":[{}],\"hex\":\"{}\"}}{}",
            p.join(","),
            hex(&b),
            if i + 1 < statuses.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");
    relay_vectors(&mut out)?;
    depth_vectors(&mut out)?;
    out.push_str("}\n");
    Ok(out)
}

/// Relay session protocol (writer frames and ctl messages): the encoded bytes of each message
/// kind with its fields, and frames both decoders must refuse.
fn relay_vectors(out: &mut String) -> anyhow::Result<()> {
    use xoq_wire::relay::{Ctl, MAX_WRITER, WriterMsg};

    let s = super::web::json_str;
    let writer: [(&str, WriterMsg, String); 6] = [
        (
            "data",
            WriterMsg::Data(Bytes::from_static(&[1, 2, 0xff])),
            r#""kind":"data","payload":"0102ff""#.into(),
        ),
        (
            "data_empty",
            WriterMsg::Data(Bytes::new()),
            r#""kind":"data","payload":"""#.into(),
        ),
        (
            "sync_snapshot",
            WriterMsg::Sync { nonce: 0x0102 },
            r#""kind":"sync","nonce":"258""#.into(),
        ),
        (
            "sync_max",
            WriterMsg::Sync { nonce: u64::MAX },
            format!(r#""kind":"sync","nonce":"{}""#, u64::MAX),
        ),
        (
            "ping",
            WriterMsg::Ping {
                id: 7,
                client_us: 1_700_000_000_000_000,
            },
            r#""kind":"ping","id":7,"client_us":"1700000000000000""#.into(),
        ),
        (
            "ping_max",
            WriterMsg::Ping {
                id: u32::MAX,
                client_us: u64::MAX,
            },
            format!(
                r#""kind":"ping","id":{},"client_us":"{}""#,
                u32::MAX,
                u64::MAX
            ),
        ),
    ];
    out.push_str("  \"relay_writer\": [\n");
    for (i, (name, m, fields)) in writer.iter().enumerate() {
        let mut b = Vec::new();
        m.encode(&mut b);
        anyhow::ensure!(
            WriterMsg::decode(&Bytes::from(b.clone())).as_ref() == Ok(m),
            "writer vector {name} does not round-trip"
        );
        let _ = writeln!(
            out,
            "    {{\"name\":\"{name}\",{fields},\"hex\":\"{}\"}}{}",
            hex(&b),
            if i + 1 < writer.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");

    // (name, message, JSON fields as decoded, string the encoder was given if it differs)
    let long = "\u{e9}".repeat(600); // 1200 UTF-8 bytes: cut to 1024 on a char boundary
    let ctl: Vec<(&str, Ctl, Option<&str>)> = vec![
        (
            "hello",
            Ctl::Hello {
                writer: "0011223344556677".into(),
                nonce: 42,
                writes: true,
                server_us: 5,
            },
            None,
        ),
        (
            "hello_snapshot",
            Ctl::Hello {
                writer: "ab".into(),
                nonce: 1,
                writes: false,
                server_us: 2,
            },
            None,
        ),
        (
            "hello_max",
            Ctl::Hello {
                writer: "w".repeat(MAX_WRITER),
                nonce: u64::MAX,
                writes: true,
                server_us: u64::MAX,
            },
            None,
        ),
        (
            "synced",
            Ctl::Synced {
                writer: "fedcba9876543210".into(),
                nonce: 0x1234_5678_9abc_def0,
                data_group: 9,
            },
            None,
        ),
        (
            "pong",
            Ctl::Pong {
                writer: "w".into(),
                id: 3,
                client_us: 10,
                server_us: 1_764_000_000_000_000,
            },
            None,
        ),
        (
            "refused",
            Ctl::Refused {
                writer: "w".into(),
                code: 6,
                message: "writes are off \u{2014} r\u{e9}essayez".into(),
            },
            None,
        ),
        (
            "refused_empty",
            Ctl::Refused {
                writer: String::new(),
                code: u16::MAX,
                message: String::new(),
            },
            None,
        ),
        (
            "refused_long_message",
            Ctl::Refused {
                writer: "w".into(),
                code: 2,
                message: long.clone(),
            },
            Some(long.as_str()),
        ),
        ("bus_state", Ctl::BusState(3), None),
        ("device_lost", Ctl::DeviceLost("unplugged".into()), None),
        ("device_restored", Ctl::DeviceRestored, None),
        ("bye", Ctl::Bye("stopping".into()), None),
    ];
    out.push_str("  \"relay_ctl\": [\n");
    for (i, (name, m, given)) in ctl.iter().enumerate() {
        let b = m.to_bytes();
        // What a decoder must produce (a long string comes back cut).
        let d = Ctl::decode(&b).map_err(|e| anyhow::anyhow!("ctl vector {name}: {e}"))?;
        anyhow::ensure!(
            given.is_some() || &d == m,
            "ctl vector {name} does not round-trip"
        );
        let fields = match &d {
            Ctl::Hello {
                writer,
                nonce,
                writes,
                server_us,
            } => format!(
                r#""kind":"hello","writer":{},"nonce":"{nonce}","writes":{writes},"server_us":"{server_us}""#,
                s(writer)
            ),
            Ctl::Synced {
                writer,
                nonce,
                data_group,
            } => format!(
                r#""kind":"synced","writer":{},"nonce":"{nonce}","data_group":"{data_group}""#,
                s(writer)
            ),
            Ctl::Pong {
                writer,
                id,
                client_us,
                server_us,
            } => format!(
                r#""kind":"pong","writer":{},"id":{id},"client_us":"{client_us}","server_us":"{server_us}""#,
                s(writer)
            ),
            Ctl::Refused {
                writer,
                code,
                message,
            } => format!(
                r#""kind":"refused","writer":{},"code":{code},"message":{}"#,
                s(writer),
                s(message)
            ),
            Ctl::BusState(c) => format!(r#""kind":"busState","code":{c}"#),
            Ctl::DeviceLost(r) => format!(r#""kind":"deviceLost","reason":{}"#, s(r)),
            Ctl::DeviceRestored => r#""kind":"deviceRestored""#.to_string(),
            Ctl::Bye(r) => format!(r#""kind":"bye","reason":{}"#, s(r)),
        };
        let given = given.map_or(String::new(), |g| format!(",\"encoded_from\":{}", s(g)));
        let _ = writeln!(
            out,
            "    {{\"name\":\"{name}\",{fields}{given},\"hex\":\"{}\"}}{}",
            hex(&b),
            if i + 1 < ctl.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");

    // Frames both decoders must refuse: (name, decoder, hex).
    let too_long_writer = Ctl::Synced {
        writer: "x".repeat(MAX_WRITER + 1),
        nonce: 0,
        data_group: 0,
    }
    .to_bytes();
    let too_long_writer = hex(&too_long_writer);
    let invalid: Vec<(&str, &str, &str)> = vec![
        ("writer_empty", "writer", ""),
        ("writer_unknown_kind", "writer", "09"),
        ("sync_truncated", "writer", "0100"),
        ("sync_trailing", "writer", "01000000000000000000"),
        ("ping_truncated", "writer", "0200000007000000"),
        ("ping_trailing", "writer", "020000000700000000000000000a"),
        ("ctl_empty", "ctl", ""),
        ("ctl_unknown_kind", "ctl", "09"),
        ("ctl_kind_zero", "ctl", "00"),
        (
            "hello_bad_bool",
            "ctl",
            "01026162000000000000000102000000000000000002",
        ),
        (
            "hello_truncated",
            "ctl",
            "0102616200000000000000010000000000000000",
        ),
        ("hello_string_beyond_bytes", "ctl", "0105616200"),
        ("synced_writer_too_long", "ctl", &too_long_writer),
        ("string_over_max", "ctl", "06444100"),
        // a 2-byte message that is not UTF-8
        ("refused_not_utf8", "ctl", "040177000602c328"),
        ("bus_state_trailing", "ctl", "050300"),
        ("device_restored_trailing", "ctl", "0700"),
        ("bye_truncated", "ctl", "0805616263"),
        (
            "pong_trailing",
            "ctl",
            "030177000000030000000000000000000000000000000000",
        ),
    ];
    out.push_str("  \"relay_invalid\": [\n");
    for (i, (name, decoder, h)) in invalid.iter().enumerate() {
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&h[j..j + 2], 16))
            .collect::<Result<_, _>>()?;
        let refused = match *decoder {
            "writer" => WriterMsg::decode(&Bytes::from(bytes)).is_err(),
            _ => Ctl::decode(&bytes).is_err(),
        };
        anyhow::ensure!(refused, "invalid relay vector {name} decodes");
        let _ = writeln!(
            out,
            "    {{\"name\":\"{name}\",\"decoder\":\"{decoder}\",\"hex\":\"{h}\"}}{}",
            if i + 1 < invalid.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n");
    Ok(())
}

fn unhex(h: &str) -> anyhow::Result<Vec<u8>> {
    Ok((0..h.len())
        .step_by(2)
        .map(|j| u8::from_str_radix(&h[j..j + 2], 16))
        .collect::<Result<_, _>>()?)
}

/// Depth blobs (`xoq_media::depth`): pictures chosen for the coder's edges (zero runs, the
/// full 16-bit range, the largest differences, odd sizes, noise) in every codec, with their
/// pixels, and blobs every decoder must refuse. Pictures are small: the JSON stays ~30 kB.
fn depth_vectors(out: &mut String) -> anyhow::Result<()> {
    use xoq_media::depth::{self, DepthCodec, MAX_DEPTH_PIXELS};

    /// Width, height, pixels.
    type Picture = (u32, u32, Vec<u16>);
    let picture = |w: u32, h: u32, f: &dyn Fn(u32, u32) -> u16| -> Picture {
        (w, h, (0..w * h).map(|i| f(i % w, i / w)).collect())
    };
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let random: Vec<u16> = (0..20 * 15)
        .map(|_| {
            let r = noise();
            if r % 5 == 0 { 0 } else { (r >> 40) as u16 }
        })
        .collect();
    let pictures: Vec<(&str, Picture)> = vec![
        // Smooth depth with invalid pixels: a band on the left and scattered holes.
        (
            "ramp_holes",
            picture(32, 24, &|x, y| {
                if x < 3 || (x * 7 + y * 3) % 23 == 0 {
                    0
                } else {
                    (800 + 5 * y + x / 4) as u16
                }
            }),
        ),
        // The extremes next to each other: largest differences both ways, and zeros between.
        (
            "full_range",
            picture(16, 4, &|x, y| match (x + 16 * y) % 6 {
                0 => 1,
                1 => 65535,
                2 => 0,
                3 => 65535,
                4 => 1,
                _ => 32768,
            }),
        ),
        (
            "alternating",
            picture(9, 3, &|x, y| if (x + y) % 2 == 0 { 0 } else { 65535 }),
        ),
        ("all_zero", picture(5, 3, &|_, _| 0)),
        ("all_max", picture(7, 5, &|_, _| 65535)),
        (
            "odd_7x5",
            picture(7, 5, &|x, y| (x * 1000 + y * 37 + 1) as u16),
        ),
        ("single", picture(1, 1, &|_, _| 1234)),
        ("single_zero", picture(1, 1, &|_, _| 0)),
        ("empty", picture(0, 0, &|_, _| 0)),
        ("random", (20, 15, random)),
    ];
    out.push_str("  \"depth\": [\n");
    let mut first = true;
    for (name, (w, h, data)) in &pictures {
        let pixels: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        for codec in [DepthCodec::Raw, DepthCodec::Rvl, DepthCodec::RvlDeflate] {
            let blob = depth::encode(codec, *w, *h, data, 1)?;
            let img = depth::decode(&blob, MAX_DEPTH_PIXELS)?;
            anyhow::ensure!(
                img.data == *data,
                "depth vector {name} {codec:?} does not round-trip"
            );
            let _ = write!(
                out,
                "{}    {{\"name\":\"{name}\",\"width\":{w},\"height\":{h},\"codec\":{},\"blob\":\"{}\",\"pixels\":\"{}\"}}",
                if first { "" } else { ",\n" },
                codec as u8,
                hex(&blob),
                hex(&pixels)
            );
            first = false;
        }
    }
    out.push_str("\n  ],\n");

    // Damaged blobs. Deflate ones are made by editing valid blobs (no deflate encoder here).
    let ramp: Vec<u16> = (1..=64 * 64).map(|i| (i % 4096) as u16 + 1).collect();
    let big = depth::encode(DepthCodec::RvlDeflate, 64, 64, &ramp, 9)?;
    let mut bomb = big.clone();
    bomb[1..5].copy_from_slice(&[0, 2, 0, 2]); // a 2x2 picture inflating to kilobytes
    let three = depth::encode(DepthCodec::RvlDeflate, 3, 1, &[5, 6, 7], 1)?;
    let mut smaller = three.clone();
    smaller[2] = 2; // declared 2x1: the RVL inside has a run past the end
    let mut trailing = three.clone();
    trailing.push(0);
    let cut = &three[..three.len() - 1];
    let (bomb, smaller, trailing, cut) = (hex(&bomb), hex(&smaller), hex(&trailing), hex(cut));
    // (name, hex, only refused where DecompressionStream follows the spec on trailing bytes)
    let bad: Vec<(&str, &str, bool)> = vec![
        ("header_short", "01000100", false),
        ("unknown_codec", "030001000100", false),
        ("too_large", "01ffffffff00", false),
        ("raw_short", "00000200010100", false),
        ("raw_long", "000001000101000000", false),
        ("zero_run_past_end", "010002000130", false),
        ("value_run_past_end", "010002000103", false),
        ("empty_run_pair", "010001000100", false),
        ("value_zero", "01000100010100", false),
        ("value_negative", "01000100010110", false),
        ("value_over_65535", "010001000101888884", false),
        ("count_code_too_long", "010001000188888888888880", false),
        ("value_code_too_long", "01000100010188888888", false),
        ("truncated", "010002000102", false),
        ("trailing_byte", "0100010001012000", false),
        ("nonzero_padding", "01000100010121", false),
        ("deflate_garbage", "0200010001ffff", false),
        ("deflate_empty", "0200010001", false),
        ("deflate_bomb", &bomb, false),
        ("deflate_size_mismatch", &smaller, false),
        ("deflate_cut", &cut, false),
        ("deflate_trailing", &trailing, true),
    ];
    out.push_str("  \"depth_bad\": [\n");
    for (i, (name, h, after_deflate)) in bad.iter().enumerate() {
        anyhow::ensure!(
            depth::decode(&unhex(h)?, MAX_DEPTH_PIXELS).is_err(),
            "bad depth vector {name} decodes"
        );
        let _ = writeln!(
            out,
            "    {{\"name\":\"{name}\",\"hex\":\"{h}\",\"after_deflate\":{after_deflate}}}{}",
            if i + 1 < bad.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n");
    Ok(())
}

//! `xoq vectors` (hidden): codec test vectors produced by the Rust codecs, as JSON.
//!
//! The JavaScript package's unit tests decode and encode these, so the two implementations
//! are checked against each other in every test run and cannot drift apart.

use std::fmt::Write as _;

use bytes::Bytes;
use xoq_device::sim::damiao::{self, CMD_DISABLE, CMD_ENABLE, CMD_SET_ZERO, Feedback, MotorModel};
use xoq_wire::can::{CanFrame, TimedFrame, encode_track_frame};
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
    out.push_str("  ]\n}\n");
    Ok(out)
}

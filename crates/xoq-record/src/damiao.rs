//! Damiao motor traffic as joint samples: the feedback motors send (position, velocity,
//! torque) and the MIT commands sent to them (target position, velocity, feed-forward
//! torque), each decoded with the motor's model limits.
//!
//! One CAN frame gives one sample of one joint, stamped with that frame's capture time:
//! nothing is interpolated or mixed with older values, so a plot shows exactly what the bus
//! carried and when.

use xoq_wire::can::CanFrame;
use xoq_wire::damiao::{
    CMD_CLEAR_ERROR, CMD_DISABLE, CMD_ENABLE, CMD_SET_ZERO, MotorModel, OPENARM_MOTORS,
    decode_feedback, decode_mit,
};

use crate::ros2::JointState;

/// What a frame was, once decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A motor's feedback.
    Feedback(JointState),
    /// An MIT command to a motor.
    Command(JointState),
}

/// The motors of one arm on one bus.
#[derive(Debug, Clone)]
pub struct Arm {
    frame_id: String,
    /// (command id, master id, model, joint name).
    motors: Vec<(u32, u32, MotorModel, String)>,
}

impl Arm {
    /// An OpenArm (eight motors, 0x01–0x08 answering on 0x11–0x18), joints `joint1`…`joint7`
    /// and `gripper`.
    pub fn openarm(frame_id: &str) -> Self {
        Self {
            frame_id: frame_id.to_string(),
            motors: OPENARM_MOTORS
                .iter()
                .enumerate()
                .map(|(i, &(cmd, master, model))| {
                    let name = if i == 7 {
                        "gripper".to_string()
                    } else {
                        format!("joint{}", i + 1)
                    };
                    (cmd, master, model, name)
                })
                .collect(),
        }
    }

    /// Decode `frame`, captured at `stamp_ns`; `None` for frames that are not feedback or MIT
    /// commands of this arm's motors (enable, parameters, other devices).
    pub fn decode(&self, stamp_ns: u64, frame: &CanFrame) -> Option<Decoded> {
        if frame.extended || frame.rtr || frame.error {
            return None;
        }
        let sample = |name: &str, p: f32, v: f32, t: f32| JointState {
            stamp_ns,
            frame_id: self.frame_id.clone(),
            name: vec![name.to_string()],
            position: vec![f64::from(p)],
            velocity: vec![f64::from(v)],
            effort: vec![f64::from(t)],
        };
        if let Some((_, _, model, name)) = self.motors.iter().find(|m| m.1 == frame.id) {
            let fb = decode_feedback(*model, &frame.data)?;
            return Some(Decoded::Feedback(sample(
                name,
                fb.position,
                fb.velocity,
                fb.torque,
            )));
        }
        let (_, _, model, name) = self.motors.iter().find(|m| m.0 == frame.id)?;
        let special = [CMD_ENABLE, CMD_DISABLE, CMD_SET_ZERO, CMD_CLEAR_ERROR];
        if special.iter().any(|s| frame.data[..] == s[..]) {
            return None;
        }
        let cmd = decode_mit(*model, &frame.data)?;
        Some(Decoded::Command(sample(
            name,
            cmd.position,
            cmd.velocity,
            cmd.torque,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xoq_wire::damiao::{Feedback, encode_feedback, encode_mit};

    #[test]
    fn feedback_and_commands_become_joint_samples() {
        let arm = Arm::openarm("arm");
        let fb = Feedback {
            motor_id: 3,
            state: 1,
            position: 1.25,
            velocity: -0.5,
            torque: 2.0,
            temp_mos: 30,
            temp_rotor: 31,
        };
        let f = CanFrame::new(0x13, encode_feedback(MotorModel::DM4340, &fb).to_vec()).expect("f");
        let Some(Decoded::Feedback(js)) = arm.decode(42, &f) else {
            panic!("feedback");
        };
        assert_eq!((js.stamp_ns, js.name[0].as_str()), (42, "joint3"));
        assert!((js.position[0] - 1.25).abs() < 1e-3, "{js:?}");
        assert!((js.velocity[0] + 0.5).abs() < 0.05 && (js.effort[0] - 2.0).abs() < 0.05);
        let c = CanFrame::new(
            0x08,
            encode_mit(MotorModel::DM4310, 0.5, 0.0, 10.0, 1.0, 0.25).to_vec(),
        )
        .expect("f");
        let Some(Decoded::Command(js)) = arm.decode(43, &c) else {
            panic!("command");
        };
        assert_eq!(js.name[0], "gripper");
        assert!((js.position[0] - 0.5).abs() < 1e-3);
        let enable = CanFrame::new(0x01, CMD_ENABLE.to_vec()).expect("f");
        assert_eq!(arm.decode(44, &enable), None);
        let other = CanFrame::new(0x321, vec![0; 8]).expect("f");
        assert_eq!(arm.decode(45, &other), None);
    }
}

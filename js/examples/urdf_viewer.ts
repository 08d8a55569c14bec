// SO-101 from its URDF (so101.urdf, primitives), joint angles read from the Feetech servos
// over the serial MoQ stream; sliders write goal positions.
import * as THREE from "three";
import {
  StatusParser,
  openSerial,
  syncReadPositions,
  torqueEnable,
  writeGoalPosition,
} from "../src/index";
import {
  connectOrExplain,
  dialUrl,
  followLink,
  loadConfig,
  noPublisher,
  reportSendError,
  setStatus,
  waitForPublisher,
} from "./common";
import { armView } from "./scene";

const STEPS = 4096;
const toAngle = (pos: number): number => ((pos - 2048) / STEPS) * 2 * Math.PI;
const toSteps = (rad: number): number => Math.round((rad / (2 * Math.PI)) * STEPS + 2048);

interface Joint {
  name: string;
  servo: number;
  axis: THREE.Vector3;
  node: THREE.Object3D;
  lower: number;
  upper: number;
}

const state = window.xoqState;
const angles: Record<number, number> = {};
Object.assign(state, { positions: {} as Record<number, number>, angles, reads: 0, joints: [] as string[] });

// --- URDF → three.js ---------------------------------------------------------------------
function nums(s: string | null, n: number): number[] {
  const v = (s ?? "").trim().split(/\s+/).filter(Boolean).map(Number);
  while (v.length < n) v.push(0);
  return v;
}

function origin(el: Element | null, obj: THREE.Object3D): void {
  const o = el?.querySelector(":scope > origin");
  const [x, y, z] = nums(o?.getAttribute("xyz") ?? null, 3);
  const [r, p, yw] = nums(o?.getAttribute("rpy") ?? null, 3);
  obj.position.set(x, y, z);
  obj.rotation.set(r, p, yw, "ZYX");
}

function visual(v: Element, materials: Map<string, THREE.Material>): THREE.Object3D | null {
  const g = v.querySelector("geometry > *");
  if (!g) return null;
  let geom: THREE.BufferGeometry;
  if (g.tagName === "box") {
    const [x, y, z] = nums(g.getAttribute("size"), 3);
    geom = new THREE.BoxGeometry(x, y, z);
  } else if (g.tagName === "cylinder") {
    const r = Number(g.getAttribute("radius"));
    geom = new THREE.CylinderGeometry(r, r, Number(g.getAttribute("length")), 32);
    geom.rotateX(Math.PI / 2); // URDF cylinders run along z, three.js ones along y
  } else if (g.tagName === "sphere") {
    geom = new THREE.SphereGeometry(Number(g.getAttribute("radius")), 24, 16);
  } else {
    return null;
  }
  const m = v.querySelector("material");
  const name = m?.getAttribute("name") ?? "";
  const rgba = m?.querySelector("color")?.getAttribute("rgba");
  const mat =
    (rgba ? new THREE.MeshStandardMaterial({ color: new THREE.Color(...nums(rgba, 3).slice(0, 3) as [number, number, number]) }) : undefined) ??
    materials.get(name) ??
    new THREE.MeshStandardMaterial({ color: 0xcccccc });
  const mesh = new THREE.Mesh(geom, mat);
  origin(v, mesh);
  return mesh;
}

function buildRobot(xml: string): { root: THREE.Object3D; joints: Joint[] } {
  const doc = new DOMParser().parseFromString(xml, "application/xml");
  const robot = doc.querySelector("robot");
  if (!robot) throw new Error("so101.urdf has no <robot>");
  const materials = new Map<string, THREE.Material>();
  for (const m of robot.querySelectorAll(":scope > material")) {
    const rgba = m.querySelector("color")?.getAttribute("rgba");
    if (rgba) {
      const [r, g, b] = nums(rgba, 3);
      materials.set(m.getAttribute("name") ?? "", new THREE.MeshStandardMaterial({ color: new THREE.Color(r, g, b), roughness: 0.6 }));
    }
  }
  const links = new Map<string, THREE.Object3D>();
  for (const l of robot.querySelectorAll(":scope > link")) {
    const g = new THREE.Group();
    g.name = l.getAttribute("name") ?? "";
    for (const v of l.querySelectorAll(":scope > visual")) {
      const mesh = visual(v, materials);
      if (mesh) g.add(mesh);
    }
    links.set(g.name, g);
  }
  const joints: Joint[] = [];
  const children = new Set<string>();
  for (const j of robot.querySelectorAll(":scope > joint")) {
    const parent = links.get(j.querySelector("parent")?.getAttribute("link") ?? "");
    const childName = j.querySelector("child")?.getAttribute("link") ?? "";
    const child = links.get(childName);
    if (!parent || !child) continue;
    children.add(childName);
    const frame = new THREE.Group(); // the joint's fixed origin
    origin(j, frame);
    const moving = new THREE.Group(); // rotates about the axis
    frame.add(moving);
    moving.add(child);
    parent.add(frame);
    const [ax, ay, az] = nums(j.querySelector("axis")?.getAttribute("xyz") ?? "1 0 0", 3);
    const servoEl = Array.from(j.children).find((c) => c.localName === "servo");
    const limit = j.querySelector("limit");
    joints.push({
      name: j.getAttribute("name") ?? "",
      servo: Number(servoEl?.getAttribute("id") ?? 0),
      axis: new THREE.Vector3(ax, ay, az).normalize(),
      node: moving,
      lower: Number(limit?.getAttribute("lower") ?? -Math.PI),
      upper: Number(limit?.getAttribute("upper") ?? Math.PI),
    });
  }
  const rootName = [...links.keys()].find((n) => !children.has(n));
  const root = links.get(rootName ?? "") ?? new THREE.Group();
  return { root, joints };
}

// --- scene -------------------------------------------------------------------------------
const view = armView(document.getElementById("view") as HTMLElement, [0.6, -0.6, 0.42], [0, 0, 0.24], 0.8);
const scene = view.scene;

let joints: Joint[] = [];
async function main(): Promise<void> {
  const urdf = await (await fetch("so101.urdf")).text();
  const robot = buildRobot(urdf);
  joints = robot.joints;
  state.joints = joints.map((j) => j.name);
  scene.add(robot.root);
  view.start(() => {
    for (const j of joints) j.node.setRotationFromAxisAngle(j.axis, angles[j.servo] ?? 0);
  });

  const cfg = await loadConfig();
  const relay = await connectOrExplain(cfg);
  if (!(await waitForPublisher(relay, `${cfg.so101}/s2c`))) {
    noPublisher(cfg.so101, cfg.relay, "start `xoq demo`, or `xoq serial-server sim:so101 --relay <url> --moq <path> --moq-writes on`");
    return;
  }
  setStatus(`found SO-101 "${cfg.so101}"; waiting for the server to acknowledge this page …`);
  const port = await openSerial(dialUrl(cfg), cfg.so101, { relay });
  followLink(port.link, relay, `connected to ${cfg.relay}, SO-101 "${cfg.so101}": drag a slider to move a servo`);

  const panel = document.getElementById("sliders") as HTMLElement;
  const torqueOn = new Set<number>();
  for (const j of joints) {
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("span");
    label.textContent = `${j.name} (${j.servo})`;
    const slider = document.createElement("input");
    slider.type = "range";
    slider.id = `servo${j.servo}`;
    slider.min = String(j.lower);
    slider.max = String(j.upper);
    slider.step = "0.01";
    slider.value = "0";
    const out = document.createElement("span");
    out.id = `angle${j.servo}`;
    slider.addEventListener("input", () => {
      // While the link is down a write waits for it briefly (bounded), then fails.
      if (!torqueOn.has(j.servo)) {
        torqueOn.add(j.servo);
        port.write(torqueEnable(j.servo, true)).catch((e) => {
          torqueOn.delete(j.servo);
          reportSendError(e);
        });
      }
      port.write(writeGoalPosition(j.servo, toSteps(Number(slider.value)))).catch(reportSendError);
    });
    row.append(label, slider, out);
    panel.appendChild(row);
  }

  // Poll positions with one SYNC_READ; each servo answers with its own status packet.
  const ids = joints.map((j) => j.servo);
  // Polls do not wait for a link that is down: the next one is 50 ms away.
  setInterval(() => port.write(syncReadPositions(ids), 0).catch(() => {}), 50);
  const parser = new StatusParser();
  for await (const chunk of port as AsyncIterable<Uint8Array>) {
    for (const p of parser.push(chunk)) {
      if (p.params.length !== 2) continue; // acknowledgements of writes
      const pos = p.params[0] | (p.params[1] << 8);
      (state.positions as Record<number, number>)[p.id] = pos;
      angles[p.id] = toAngle(pos);
      state.reads = (state.reads as number) + 1;
      const out = document.getElementById(`angle${p.id}`);
      if (out) out.textContent = angles[p.id].toFixed(2);
    }
  }
  if (port.link.state !== "closed") setStatus("the serial stream ended; reload to reconnect", "error");
}

main().catch((e) => {
  if (window.xoqState.kind !== "error") setStatus(`error: ${(e as Error).message ?? e}`, "error");
});

import { simulate } from "./herd.js";
globalThis.__series = true;
const cfg = JSON.parse(process.argv[2]);
const out = [];
for (let seed = 1; seed <= 6; seed += 1) {
  const r = await simulate({ ...cfg, seed });
  const d = new Map(r.series);
  const last = Math.max(...d.keys());
  let best = 0;
  for (let t = 0; t <= last; t += 1) { let s = 0; for (let k = 0; k < 10; k += 1) s += d.get(t + k) ?? 0; best = Math.max(best, s); }
  out.push([r.peakPerSecond, best]);
}
console.log(JSON.stringify(cfg), JSON.stringify(out));

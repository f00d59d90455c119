import { simulate } from "./herd.js";
globalThis.__series = true;
const cfg = JSON.parse(process.argv[2]);
const runs = Number(process.argv[3] ?? 10);
const sum = new Map();
const peaks = [];
for (let seed = 1; seed <= runs; seed += 1) {
  const r = await simulate({ ...cfg, seed });
  peaks.push(r.peakPerSecond);
  for (const [t, c] of r.series) sum.set(t, (sum.get(t) ?? 0) + c);
}
console.log(JSON.stringify({ cfg, peaksPerRun: peaks, peakOf10kSummed: Math.max(...sum.values()) * 10 / runs }));

// runner.js: replays energetic_wgpu dispatch plans with WebGPU (Dawn/Tint in Chromium).
//
// The page fetches a job JSON (?job=job.json, default "job.json") written by
// energetic_wgpu.dawn.harness:
//   {"shaders": "shaders/",                      // folder of the .wgsl files (served)
//    "plans":   [plan, ...],                     // see energetic_wgpu/dawn/plan.py
//    "compile": [{name, sources, entry_point, bindings, constants, overrides?}, ...]}
// Every shader module is built from the SAME .wgsl files, concatenated in the order of the
// kernel's KernelSpec.sources with "\n" (as the Python runtime does); bind group layouts come
// from KernelSpec.bindings, pipelines get KernelSpec's override constants. The result
// (readbacks as base64, Tint compilation messages with line/column, error-scope errors) is
// POSTed as JSON to ./result (or the job's "result" path).

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

function b64encode(bytes) {
  let s = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  }
  return btoa(s);
}

function b64decode(str) {
  const bin = atob(str);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hexdecode(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

async function postJSON(url, obj) {
  await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });
}

export class Runner {
  constructor(device, shaderBase) {
    this.device = device;
    this.shaderBase = shaderBase;
    this.texts = new Map();     // file -> text
    this.modules = new Map();   // key -> {module, messages, files}
    this.layouts = new Map();   // bindings json -> {bgl, pl}
    this.pipelines = new Map(); // key -> {pipeline, error}
  }

  async source(file, overrides) {
    if (overrides && file in overrides) return overrides[file];
    if (!this.texts.has(file)) {
      const r = await fetch(this.shaderBase + file);
      if (!r.ok) throw new Error(`cannot fetch shader ${file}: HTTP ${r.status}`);
      this.texts.set(file, await r.text());
    }
    return this.texts.get(file);
  }

  // The module of the concatenated sources + Tint's messages (file-relative line numbers too).
  async module(sources, overrides) {
    const key = JSON.stringify([sources, overrides || null]);
    if (this.modules.has(key)) return this.modules.get(key);
    const texts = [];
    for (const f of sources) texts.push(await this.source(f, overrides));
    const starts = []; // first line (1-based) of each file in the concatenation
    let line = 1;
    for (const t of texts) {
      starts.push(line);
      line += t.split("\n").length; // joined with "\n": a file of k lines spans k lines + separator
    }
    const code = texts.join("\n");
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label: sources.join("+"), code });
    const info = await module.getCompilationInfo();
    const scopeErr = await this.device.popErrorScope();
    const messages = info.messages.map((m) => {
      let fi = 0;
      for (let i = 0; i < starts.length; i++) if (m.lineNum >= starts[i]) fi = i;
      return {
        type: m.type, message: m.message, line: m.lineNum, column: m.linePos,
        offset: m.offset, length: m.length,
        file: sources[fi], file_line: m.lineNum - starts[fi] + 1,
      };
    });
    const entry = { module, messages, scope_error: scopeErr ? scopeErr.message : null };
    this.modules.set(key, entry);
    return entry;
  }

  layout(bindings) {
    const key = JSON.stringify(bindings);
    if (this.layouts.has(key)) return this.layouts.get(key);
    const kinds = { uniform: "uniform", read: "read-only-storage", read_write: "storage" };
    const entries = [];
    bindings.forEach((b, i) => {
      if (b !== null) entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type: kinds[b] } });
    });
    const bgl = this.device.createBindGroupLayout({ entries });
    const pl = this.device.createPipelineLayout({ bindGroupLayouts: [bgl] });
    const out = { bgl, pl };
    this.layouts.set(key, out);
    return out;
  }

  // {pipeline, bgl, messages, error}: error is null or Tint's / Dawn's message.
  async pipeline(spec, constants, overrides) {
    const consts = Object.assign({}, spec.constants || {}, constants || {});
    const key = JSON.stringify([spec.name, spec.sources, spec.entry_point, spec.bindings, consts, overrides || null]);
    if (this.pipelines.has(key)) return this.pipelines.get(key);
    const mod = await this.module(spec.sources, overrides);
    const { bgl, pl } = this.layout(spec.bindings);
    let pipeline = null, error = null;
    this.device.pushErrorScope("validation");
    try {
      pipeline = await this.device.createComputePipelineAsync({
        label: spec.name, layout: pl,
        compute: { module: mod.module, entryPoint: spec.entry_point, constants: consts },
      });
    } catch (e) {
      error = `${e.name || "Error"}: ${e.message}`;
    }
    const se = await this.device.popErrorScope();
    if (se && !error) error = se.message;
    const out = { pipeline, bgl, messages: mod.messages, error, scope_error: mod.scope_error };
    this.pipelines.set(key, out);
    return out;
  }

  async compileCheck(item) {
    const spec = { name: item.name, sources: item.sources, entry_point: item.entry_point,
                   bindings: item.bindings, constants: item.constants || {} };
    const p = await this.pipeline(spec, null, item.overrides || null);
    return { name: item.name, messages: p.messages, module_error: p.scope_error, pipeline_error: p.error };
  }

  async runPlan(plan) {
    const dev = this.device;
    const t0 = performance.now();
    const result = { name: plan.name, reads: {}, errors: [], messages: [], pipeline_errors: [] };
    const buffers = new Map();
    const uniforms = new Map();
    const toDestroy = [];
    let encoder = null, pass = null;
    const endPass = () => { if (pass) { pass.end(); pass = null; } };
    const enc = () => { if (!encoder) encoder = dev.createCommandEncoder(); return encoder; };
    const submit = () => { endPass(); if (encoder) { dev.queue.submit([encoder.finish()]); encoder = null; } };
    const buf = (id) => {
      const b = buffers.get(id);
      if (!b) throw new Error(`plan ${plan.name}: buffer ${id} used before it was created`);
      return b;
    };
    dev.pushErrorScope("out-of-memory");
    dev.pushErrorScope("internal");
    dev.pushErrorScope("validation");
    try {
      for (const ev of plan.events) {
        switch (ev.op) {
          case "create": {
            const b = dev.createBuffer({ size: Math.max(16, ev.size), usage: STORAGE() });
            buffers.set(ev.buffer, b); toDestroy.push(b);
            break;
          }
          case "write": {
            // program order: the pending commands run before this write
            submit();
            dev.queue.writeBuffer(buf(ev.buffer), ev.offset || 0, b64decode(ev.data));
            break;
          }
          case "clear": endPass(); enc().clearBuffer(buf(ev.buffer), ev.offset || 0, ev.size); break;
          case "copy":
            endPass();
            enc().copyBufferToBuffer(buf(ev.src), ev.src_offset || 0, buf(ev.dst), ev.dst_offset || 0, ev.size);
            break;
          case "dispatch": {
            const spec = plan.kernels[ev.kernel];
            if (!spec) throw new Error(`plan ${plan.name}: kernel ${ev.kernel} missing from the plan's kernel table`);
            const p = await this.pipeline(spec, ev.constants, plan.overrides || null);
            for (const m of p.messages) if (!result.messages.some((x) => x.message === m.message && x.line === m.line)) result.messages.push(m);
            if (p.error) {
              if (!result.pipeline_errors.some((x) => x.kernel === ev.kernel)) result.pipeline_errors.push({ kernel: ev.kernel, error: p.error });
              break;
            }
            const entries = ev.bindings.map((b) => ({
              binding: b.binding, resource: { buffer: buf(b.buffer), offset: b.offset || 0, size: b.size },
            }));
            const ub = spec.bindings.indexOf("uniform");
            if (ub >= 0) {
              let u = uniforms.get(ev.uniforms);
              if (!u) {
                const bytes = hexdecode(ev.uniforms || "");
                const size = Math.max(16, Math.ceil(bytes.length / 16) * 16);
                u = dev.createBuffer({ size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, mappedAtCreation: true });
                new Uint8Array(u.getMappedRange()).set(bytes);
                u.unmap();
                uniforms.set(ev.uniforms, u); toDestroy.push(u);
              }
              entries.push({ binding: ub, resource: { buffer: u } });
            }
            const bg = dev.createBindGroup({ layout: p.bgl, entries });
            if (!pass) pass = enc().beginComputePass();
            pass.setPipeline(p.pipeline);
            pass.setBindGroup(0, bg);
            const [x, y, z] = ev.workgroups;
            pass.dispatchWorkgroups(x, y || 1, z || 1);
            break;
          }
          case "submit": submit(); break;
          case "read": {
            endPass();
            const n = Math.ceil(ev.nbytes / 4) * 4;
            const staging = dev.createBuffer({ size: n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
            enc().copyBufferToBuffer(buf(ev.buffer), ev.offset || 0, staging, 0, n);
            submit();
            await staging.mapAsync(GPUMapMode.READ);
            const bytes = new Uint8Array(staging.getMappedRange().slice(0, ev.nbytes));
            staging.unmap();
            staging.destroy();
            result.reads[ev.index] = b64encode(bytes);
            break;
          }
          default: throw new Error(`plan ${plan.name}: unknown event op ${ev.op}`);
        }
      }
      submit();
      await dev.queue.onSubmittedWorkDone();
    } catch (e) {
      result.errors.push(`exception: ${e.name || "Error"}: ${e.message}`);
      try { endPass(); } catch (e2) { /* already broken */ }
      encoder = null; pass = null;
    }
    for (const scope of ["validation", "internal", "out-of-memory"]) {
      const err = await dev.popErrorScope();
      if (err) result.errors.push(`${scope} error: ${err.message}`);
    }
    for (const b of toDestroy) b.destroy();
    result.ms = performance.now() - t0;
    return result;
  }
}

export async function adapterSummary(adapter) {
  const info = adapter.info || (adapter.requestAdapterInfo ? await adapter.requestAdapterInfo() : {});
  return {
    vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
    is_fallback: adapter.isFallbackAdapter ?? info.isFallbackAdapter ?? null,
    features: Array.from(adapter.features).sort(),
  };
}

async function main() {
  const params = new URLSearchParams(location.search);
  const jobUrl = params.get("job") || "job.json";
  const resultUrl = params.get("result") || "result";
  const status = document.getElementById("status");
  const say = (s) => { if (status) status.textContent = s; };
  const out = { ok: false, adapter: null, plans: [], compile: [], uncaptured: [], fatal: null, user_agent: navigator.userAgent };
  try {
    const job = await (await fetch(jobUrl)).json();
    if (!navigator.gpu) throw new Error("navigator.gpu is undefined: WebGPU is not available in this browser");
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) throw new Error("navigator.gpu.requestAdapter() returned null: no WebGPU adapter");
    out.adapter = await adapterSummary(adapter);
    const device = await adapter.requestDevice(); // default limits = WebGPU core limits
    device.addEventListener("uncapturederror", (e) => out.uncaptured.push(e.error.message));
    device.lost.then((info) => { out.uncaptured.push(`device lost: ${info.reason}: ${info.message}`); });
    const runner = new Runner(device, job.shaders || "shaders/");
    for (const item of job.compile || []) {
      say(`compiling ${item.name}`);
      out.compile.push(await runner.compileCheck(item));
    }
    for (const plan of job.plans || []) {
      say(`running ${plan.name}`);
      out.plans.push(await runner.runPlan(plan));
    }
    out.ok = true;
    say("done");
  } catch (e) {
    out.fatal = `${e.name || "Error"}: ${e.message}\n${e.stack || ""}`;
    say(`failed: ${out.fatal}`);
  }
  await postJSON(resultUrl, out);
}

if (typeof window !== "undefined" && document.currentScript === null && !window.ENERGETIC_NO_AUTORUN) {
  main();
}

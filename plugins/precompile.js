'use strict';

// Serverless plugin: after the zips are built (and serverless-python-requirements has added
// the dependencies), give every Python module in them a bytecode cache, so a cold start
// imports instead of compiling. The work is done by precompile.py, run by the same Python
// that installs the requirements; see that file for why the caches are hash-based.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const SCRIPT = path.join(__dirname, 'precompile.py');

class PrecompilePython {
  constructor(serverless, _options, utils = {}) {
    this.serverless = serverless;
    this.warn = utils.log ? (text) => utils.log.warning(text) : (text) => serverless.cli.log(text);
    this.hooks = {
      'after:package:createDeploymentArtifacts': () => this.precompile(),
      'after:deploy:function:packageFunction': () => this.precompile(),
    };
  }

  // The zips this run built, never a prebuilt artifact that serverless.yml points at. The
  // framework builds them in .serverless (and copies them to `--package` later).
  artifacts() {
    const { service, serviceDir } = this.serverless;
    const built = path.join(path.resolve(serviceDir), '.serverless') + path.sep;
    const paths = [service.package && service.package.artifact];
    for (const name of service.getAllFunctions()) {
      const fn = service.getFunction(name);
      paths.push(fn.package && fn.package.artifact);
    }
    const zips = paths.filter(Boolean).map((p) => path.resolve(serviceDir, p));
    return [...new Set(zips)].filter((p) => p.startsWith(built) && fs.existsSync(p));
  }

  precompile() {
    const { service } = this.serverless;
    const runtime = service.provider.runtime;
    if (!runtime || !runtime.startsWith('python')) return;
    const python = (service.custom.pythonRequirements || {}).pythonBin || runtime;
    const zips = this.artifacts();
    if (zips.length === 0) {
      this.warn('Precompile: no zip built by this run, nothing precompiled');
      return;
    }
    // -I: this shell's PYTHON* settings (a cache prefix, -O) must not shape the caches.
    const result = spawnSync(python, ['-I', SCRIPT, '--runtime', runtime, ...zips], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (result.error || result.status !== 0) {
      const why = result.error ? result.error.message : `exit code ${result.status}`;
      throw new this.serverless.classes.Error(`Precompiling the Python zips failed: ${why}`);
    }
  }
}

module.exports = PrecompilePython;

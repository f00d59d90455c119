'use strict';

// Serverless plugin: before a stack is packaged or deployed, check that its $connect can
// authenticate anyone at all, with wspush's own rules (auth_check.py), so a stage never
// deploys refusing every handshake (jwt with no key) or accepting anyone (auth none).

const { spawnSync } = require('node:child_process');
const path = require('node:path');

const SCRIPT = path.join(__dirname, 'auth_check.py');

class AuthCheck {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'before:package:initialize': () => this.check(),
      'before:deploy:function:initialize': () => this.check(),
    };
  }

  check() {
    const { service } = this.serverless;
    const connect = service.getFunction('connect');
    const environment = { ...service.provider.environment, ...(connect.environment || {}) };
    const python = (service.custom.pythonRequirements || {}).pythonBin || service.provider.runtime;
    // -I: nothing from this shell's PYTHON* settings; the script finds wspush itself.
    const result = spawnSync(python, ['-I', SCRIPT], {
      input: JSON.stringify(environment),
      encoding: 'utf8',
    });
    if (result.error || (result.status !== 0 && result.status !== 1)) {
      const why = result.error ? result.error.message : `${result.stderr}`.trim();
      throw new this.serverless.classes.Error(`Checking the auth settings failed: ${why}`);
    }
    if (result.status === 1) {
      const stage = service.provider.stage;
      throw new this.serverless.classes.Error(
        `Stage ${stage} cannot be packaged: ${result.stdout.trim()}. ` +
          'See README.md, "Deploy and send a first message".',
      );
    }
  }
}

module.exports = AuthCheck;

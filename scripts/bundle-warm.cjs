// Child of bundle-cli.mjs: runs the CLI bundle (compiled afresh) with the arguments it was given,
// and when the parent says so (its stand-in broker has the command's connection) writes V8's code
// cache of the bundle and exits. The cache then holds the functions a start compiles on its way to
// the first packet, not only the bundle's top level: about 15 ms less of each start.
'use strict';
const { writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { join } = require('node:path');

const [cliDir, cacheFile, ...args] = process.argv.slice(2);
const { BUNDLE_FILE, compileBundle, readBundle } = require(join(cliDir, 'bundle.cjs'));
const file = join(cliDir, BUNDLE_FILE);
const script = compileBundle(file, readBundle(file));
process.once('message', () => {
  writeFileSync(cacheFile, script.createCachedData());
  process.exit(0);
});
// The CLI parses process.argv as `node nattrav ARGS`.
process.argv = [process.argv[0], join(cliDir, 'nattrav.cjs'), ...args];
const module_ = { exports: {} };
script.runInThisContext().call(module_.exports, module_.exports, createRequire(file), module_, file, cliDir);

// Example app for rollout: a small HTTP server run as a systemd template
// instance (my-app@PORT). Its behaviour comes from app.json in its own
// directory, so a "release" is just this directory with another app.json:
//
//   version      served in the X-App-Version header
//   bootDelayMs  time spent "starting up" before it listens (like connecting
//                to a database); overridden by BOOT_DELAY_MS
//   workMs       time each request takes; overridden by WORK_MS
//   requiredEnv  variables that must be set, or it exits with a clear stderr
//                line (the "silent death" PM2 hides)
//   healthy      false: /healthz answers 503 forever (a release that starts
//                but never becomes ready)
//   failPercent  this share of real requests (not /healthz) answer 500: a
//                release that passes its health check but fails users
//   envHashes    true: /envhash?name=NAME answers the SHA-256 of the
//                variable's value (never the value), so tests can check the
//                env an instance runs with
//
// CRASH_VERSION=V in an instance's environment makes version V exit at once
// with a FATAL line on that instance only (a host-specific problem that
// only the new release trips over).
//
// It listens on BIND_ADDRESS (default 127.0.0.1), port PORT.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');

const settings = JSON.parse(fs.readFileSync(path.join(__dirname, 'app.json'), 'utf8'));
const version = String(settings.version || 'dev');
const port = Number(process.env.PORT);
const bindAddress = process.env.BIND_ADDRESS || '127.0.0.1';
const bootDelayMs = Number(process.env.BOOT_DELAY_MS || settings.bootDelayMs || 0);
const workMs = Number(process.env.WORK_MS || settings.workMs || 0);
const failPercent = Number(settings.failPercent || 0);
let served = 0;

for (const name of settings.requiredEnv || []) {
  if (!process.env[name]) {
    console.error(`FATAL: required environment variable ${name} is not set (version ${version})`);
    process.exit(1);
  }
}
if (process.env.CRASH_VERSION && process.env.CRASH_VERSION === version) {
  console.error(`FATAL: version ${version} cannot start on this instance (CRASH_VERSION=${version})`);
  process.exit(1);
}
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`FATAL: PORT must be a TCP port, got ${JSON.stringify(process.env.PORT)}`);
  process.exit(1);
}

function reply(res, status, body) {
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'X-App-Version': version,
    'X-App-Port': String(port),
  });
  res.end(JSON.stringify(body) + '\n');
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://app');
  if (url.pathname === '/healthz') {
    if (settings.healthy === false) return reply(res, 503, { status: 'not ready', version });
    return reply(res, 200, { status: 'ok', version, port });
  }
  if (url.pathname === '/envhash' && settings.envHashes === true) {
    const name = url.searchParams.get('name') || '';
    const value = process.env[name];
    const sha256 = value === undefined ? null : crypto.createHash('sha256').update(value, 'utf8').digest('hex');
    return reply(res, 200, { version, port, name, set: value !== undefined, sha256 });
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let ms = workMs;
    if (url.pathname === '/slow') ms = Number(url.searchParams.get('ms') || 1000);
    setTimeout(() => {
      served++;
      if (failPercent > 0 && served % Math.round(100 / failPercent) === 0) {
        return reply(res, 500, { version, port, error: 'failPercent' });
      }
      if (url.pathname === '/echo' && req.method === 'POST') {
        return reply(res, 200, { version, port, echo: Buffer.concat(chunks).toString('utf8') });
      }
      reply(res, 200, { version, port, path: url.pathname });
    }, ms);
  });
});

setTimeout(() => {
  server.listen(port, bindAddress, () => {
    console.log(`my-app ${version} listening on ${bindAddress}:${port} (boot ${bootDelayMs} ms)`);
  });
}, bootDelayMs);

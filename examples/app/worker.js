// Example worker for rollout (workers:): a queue consumer run as a
// systemd template instance with no port (my-app-worker@1, @2, ...).
//
// Its queue is a directory, QUEUE_DIR: each job is a file in todo/. A job
// is claimed by renaming it into doing/ (atomic: no two workers get the
// same one), worked on for workMs (app.json), then recorded as one line
// "JOB WORKER VERSION" in done.log and removed. On SIGTERM (systemctl
// stop or restart) the job in hand is finished first, then it exits 0:
// a restart loses no job and does none twice.
//
// app.json's workerCrash: true makes this version exit 1 at once with a
// FATAL line (a release whose worker cannot start).
'use strict';

const fs = require('fs');
const path = require('path');

const settings = JSON.parse(fs.readFileSync(path.join(__dirname, 'app.json'), 'utf8'));
const version = String(settings.version || 'dev');
const workMs = Number(settings.workMs || 0);
const name = 'worker-' + (process.env.WORKER || process.pid);
const dir = process.env.QUEUE_DIR;

if (!dir) {
  console.error(`FATAL: required environment variable QUEUE_DIR is not set (version ${version})`);
  process.exit(1);
}
if (settings.workerCrash) {
  console.error(`FATAL: worker cannot start (version ${version})`);
  process.exit(1);
}

const todo = path.join(dir, 'todo');
const doing = path.join(dir, 'doing');
fs.mkdirSync(todo, { recursive: true });
fs.mkdirSync(doing, { recursive: true });

let stopping = false;
let busy = false;
process.on('SIGTERM', () => {
  stopping = true;
  if (!busy) process.exit(0);
});

function next() {
  if (stopping) process.exit(0);
  let jobs = [];
  try {
    jobs = fs.readdirSync(todo).sort();
  } catch (e) {
    // The directory is there; a read that fails is tried again.
  }
  for (const job of jobs) {
    const claimed = path.join(doing, job);
    try {
      fs.renameSync(path.join(todo, job), claimed);
    } catch (e) {
      continue; // another worker took it
    }
    busy = true;
    setTimeout(() => {
      fs.appendFileSync(path.join(dir, 'done.log'), `${job} ${name} ${version}\n`);
      fs.unlinkSync(claimed);
      busy = false;
      setImmediate(next);
    }, workMs);
    return;
  }
  setTimeout(next, 20);
}

console.log(`${name} ${version} consuming ${todo}`);
next();

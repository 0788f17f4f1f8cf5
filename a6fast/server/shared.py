"""Confs shared by the worker processes of one runner, as small files in a private directory.

The gateway sends PrepareConf on one connection and the calls on others, which may land on
another worker: a worker that does not know a token reads it here before calling it unknown.
Only a PrepareConf or a miss touches the directory; calls are served from each worker's memory.
The directory is made fresh for each run, so a token from before a restart is never found.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

log = logging.getLogger("a6fast.server")


class SharedConfs:
    def __init__(self, directory):
        self.dir = directory

    @classmethod
    def create(cls):
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        return cls(tempfile.mkdtemp(prefix="a6fast-confs-", dir=base))

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _conf_path(self, token):
        return os.path.join(self.dir, "t%d" % token)

    def _key_path(self, key):
        return os.path.join(self.dir, "k" + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest())

    def _write(self, path, data):
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, path)

    def publish(self, token, key, entries):
        try:
            self._write(self._conf_path(token), json.dumps({"key": key, "conf": entries}))
            if key is not None:
                self._write(self._key_path(key), str(token))
        except OSError as exc:
            log.error("cannot share conf_token %d with the other workers: %s", token, exc)

    def load(self, token):
        """``(key, entries)`` of a token another worker issued, or None."""
        try:
            with open(self._conf_path(token)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        self.touch(token)
        return data["key"], [tuple(entry) for entry in data["conf"]]

    def token_of(self, key, entries):
        """The token another worker gave this same key and conf, or None."""
        try:
            with open(self._key_path(key)) as f:
                token = int(f.read())
        except (OSError, ValueError):
            return None
        found = self.load(token)
        if found is None or found[1] != list(entries):
            return None
        return token

    def touch(self, token):
        try:
            os.utime(self._conf_path(token))
        except OSError:
            pass

    def sweep(self, expire, max_confs):
        """Remove confs no worker used for ``expire`` seconds (plus a margin), oldest beyond the bound."""
        now = time.time()
        files = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.dir, name)
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if now - mtime > expire + 120.0:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            elif name.startswith("t"):
                files.append((mtime, path))
        if len(files) > max_confs:
            files.sort()
            for _, path in files[:len(files) - max_confs]:
                try:
                    os.unlink(path)
                except OSError:
                    pass

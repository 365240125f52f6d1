#!/usr/bin/python3
"""A FUSE filesystem that loses every write not yet fsynced when the power goes.

    powercut-fs.py BACKING MOUNTPOINT

Files live in BACKING. A write lands in this process's memory (per file: dirty 4 KiB blocks and
a pending size), reads see it, and only fsync/fdatasync of that file carries it to BACKING and
fsyncs it there. The power cut is this process dying (kill -9): what was not synced is gone, as on
a disk whose volatile cache lost power. Directory operations (create, unlink, rename, mkdir) go to
BACKING at once, as a journaling filesystem's metadata would after its commit interval; that is a
kinder model than some real storage, never a harsher one.

Prints "ready" on stdout once mounted. Debian: fuse3 (fusermount) and python3-fusepy.
"""
import errno
import os
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations

BLOCK = 4096


class Pending:
    """Unsynced state of one file: dirty blocks and the size it has for readers."""

    def __init__(self, size):
        self.blocks = {}
        self.size = size


class PowercutFS(Operations):
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.pending = {}
        self._mutex = threading.RLock()

    def _full(self, path):
        return os.path.join(self.root, path.lstrip('/'))

    def _state(self, path):
        state = self.pending.get(path)
        if state is None:
            state = Pending(os.path.getsize(self._full(path)))
            self.pending[path] = state
        return state

    def _read_block(self, path, index):
        state = self.pending.get(path)
        if state is not None and index in state.blocks:
            return state.blocks[index]
        with open(self._full(path), 'rb') as f:
            f.seek(index * BLOCK)
            data = f.read(BLOCK)
        return data.ljust(BLOCK, b'\0')

    # Metadata

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._full(path))
        except FileNotFoundError:
            raise FuseOSError(errno.ENOENT)
        attrs = {key: getattr(st, key) for key in ('st_atime', 'st_ctime', 'st_gid', 'st_mode', 'st_mtime', 'st_nlink', 'st_size', 'st_uid')}
        with self._mutex:
            state = self.pending.get(path)
            if state is not None:
                attrs['st_size'] = state.size
        return attrs

    def readdir(self, path, fh):
        return ['.', '..'] + os.listdir(self._full(path))

    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        with self._mutex:
            self.pending.pop(path, None)
            os.unlink(self._full(path))

    def rename(self, old, new):
        with self._mutex:
            state = self.pending.pop(old, None)
            self.pending.pop(new, None)
            os.rename(self._full(old), self._full(new))
            if state is not None:
                self.pending[new] = state

    def utimens(self, path, times=None):
        os.utime(self._full(path), times)

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        return {key: getattr(st, key) for key in ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail', 'f_ffree', 'f_files', 'f_flag', 'f_frsize', 'f_namemax')}

    # Files

    def create(self, path, mode, fi=None):
        fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT, mode)
        os.close(fd)
        return 0

    def open(self, path, flags):
        if not os.path.exists(self._full(path)):
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        with self._mutex:
            state = self.pending.get(path)
            length = state.size if state is not None else os.path.getsize(self._full(path))
            end = min(offset + size, length)
            if end <= offset:
                return b''
            out = bytearray()
            index = offset // BLOCK
            while index * BLOCK < end:
                out += self._read_block(path, index)
                index += 1
            start = offset - (offset // BLOCK) * BLOCK
            return bytes(out[start:start + (end - offset)])

    def write(self, path, data, offset, fh):
        with self._mutex:
            state = self._state(path)
            pos = 0
            while pos < len(data):
                at = offset + pos
                index = at // BLOCK
                within = at - index * BLOCK
                take = min(BLOCK - within, len(data) - pos)
                block = bytearray(self._read_block(path, index))
                block[within:within + take] = data[pos:pos + take]
                state.blocks[index] = bytes(block)
                pos += take
            state.size = max(state.size, offset + len(data))
            return len(data)

    def truncate(self, path, length, fh=None):
        with self._mutex:
            state = self._state(path)
            for index in [i for i in state.blocks if i * BLOCK >= length]:
                del state.blocks[index]
            last = length // BLOCK
            if length % BLOCK and last in state.blocks:
                block = state.blocks[last]
                keep = length - last * BLOCK
                state.blocks[last] = block[:keep] + b'\0' * (BLOCK - keep)
            state.size = length

    def fsync(self, path, datasync, fh):
        with self._mutex:
            state = self.pending.pop(path, None)
            full = self._full(path)
            fd = os.open(full, os.O_WRONLY)
            try:
                if state is not None:
                    for index, block in sorted(state.blocks.items()):
                        start = index * BLOCK
                        if start >= state.size:
                            continue
                        os.pwrite(fd, block[:state.size - start], start)
                    os.ftruncate(fd, state.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        return 0

    def flush(self, path, fh):
        # close() is not a sync.
        return 0

    def release(self, path, fh):
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0


def main():
    if len(sys.argv) != 3:
        sys.stderr.write('usage: powercut-fs.py BACKING MOUNTPOINT\n')
        sys.exit(2)
    backing, mountpoint = sys.argv[1], sys.argv[2]
    fs = PowercutFS(backing)

    def announce():
        # Mounted once the mountpoint is a different filesystem from its parent.
        import time
        parent = os.stat(os.path.dirname(os.path.abspath(mountpoint))).st_dev
        for _ in range(500):
            try:
                if os.stat(mountpoint).st_dev != parent:
                    print('ready', flush=True)
                    return
            except OSError:
                pass
            time.sleep(0.01)

    threading.Thread(target=announce, daemon=True).start()
    FUSE(fs, mountpoint, foreground=True, nothreads=False, attr_timeout=0, entry_timeout=0, default_permissions=True)


if __name__ == '__main__':
    main()

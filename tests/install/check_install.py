#!/usr/bin/env python3
"""Installs the build into a temporary root and checks what landed there.

    check_install.py MESON BUILD_DIR

Runs `meson install --destdir TMP --no-rebuild` for BUILD_DIR, then checks
every file a package of huracanfs must hold, under the configured prefix:
the binary (which runs), both names of the mount and unmount helpers, the systemd units (with the
installed binary's path, and accepted by `systemd-analyze verify` when that
is available), the man pages (when scdoc was found: HFS_MAN_PAGES=1), the
sample config (which `huracanfs check-config` accepts) and the bash
completion (which completes). Nothing may be installed outside the prefix.
Exit 0 on success, 1 with the list of problems otherwise.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

problems = []


def problem(msg):
    problems.append(msg)


def run(args, **kw):
    kw.setdefault('stdout', subprocess.PIPE)
    kw.setdefault('stderr', subprocess.PIPE)
    kw.setdefault('timeout', 120)
    r = subprocess.run([str(a) for a in args], **kw)
    r.stdout = r.stdout.decode('utf-8', 'replace') if r.stdout else ''
    r.stderr = r.stderr.decode('utf-8', 'replace') if r.stderr else ''
    return r


def build_options(meson, build):
    r = run([meson, 'introspect', '--buildoptions', build])
    if r.returncode != 0:
        sys.exit('meson introspect failed: %s' % r.stderr)
    return {o['name']: o['value'] for o in json.loads(r.stdout)}


def under(root, rel):
    """root/rel, also when rel is absolute: TMP + /usr/local = TMP/usr/local."""
    return Path(str(root) + '/' + str(rel).lstrip('/'))


def optdir(dest, opts, name):
    """Where the directory option `name` (bindir, mandir...) lands under
    `dest` ('' for the real root): relative to the prefix, or absolute."""
    d = opts[name]
    if not os.path.isabs(d):
        d = opts['prefix'].rstrip('/') + '/' + d
    return under(dest, d)


def find_one(top, name, parent_suffix):
    hits = [p for p in top.rglob(name)
            if str(p.parent).endswith(parent_suffix)]
    if len(hits) != 1:
        problem('expected one %s in a directory ending in %s, found %s'
                % (name, parent_suffix, [str(h) for h in hits]))
        return None
    return hits[0]


def check_binary(dest, opts, version):
    b = optdir(dest, opts, 'bindir') / 'huracanfs'
    if not (b.is_file() and os.access(b, os.X_OK)):
        problem('binary missing or not executable: %s' % b)
        return None
    r = run([b, '--version'])
    if r.returncode != 0 or not r.stdout.startswith('huracanfs %s' % version):
        problem('%s --version: exit %d, %r' % (b, r.returncode, r.stdout))
    return b


def check_helpers(dest, opts):
    sbin = optdir(dest, opts, 'sbindir')
    for kind in ('mount', 'umount'):
        helper = sbin / ('%s.huracanfs' % kind)
        if not (helper.is_file() and os.access(helper, os.X_OK)):
            problem('%s helper missing or not executable: %s'
                    % (kind, helper))
            continue
        r = run(['sh', '-n', helper])
        if r.returncode != 0:
            problem('sh -n %s: %s' % (helper, r.stderr))
        alias = sbin / ('%s.fuse.huracanfs' % kind)
        if not alias.is_symlink():
            problem('%s is not a symlink' % alias)
        elif alias.resolve() != helper.resolve():
            problem('%s points to %s, not to %s'
                    % (alias, os.readlink(alias), helper))


def check_units(dest, opts, binary):
    installed_bin = optdir('', opts, 'bindir') / 'huracanfs'
    system = find_one(dest, 'huracanfs@.service', '/systemd/system')
    user = find_one(dest, 'huracanfs.service', '/systemd/user')
    units = [u for u in (system, user) if u]
    for u in units:
        text = u.read_text()
        if '@' + 'BINDIR@' in text:
            problem('%s: @BINDIR@ was not substituted' % u)
        if str(installed_bin) not in text:
            problem('%s does not run the installed binary %s'
                    % (u, installed_bin))
        for want in ('Type=notify', 'ExecStart=', 'ExecStop=',
                     '--foreground', 'huracanfs unmount',
                     'Restart=on-failure', 'TimeoutStopSec='):
            if want not in text:
                problem('%s lacks %s' % (u, want))
    if system and 'network-online.target' not in system.read_text():
        problem('%s is not ordered after network-online.target' % system)
    analyze = shutil.which('systemd-analyze')
    if not analyze or not binary:
        print('systemd-analyze missing: units not verified')
        return
    # Verify copies whose commands point into the temporary root, so that
    # systemd-analyze finds them.
    with tempfile.TemporaryDirectory() as tmp:
        rt = Path(tmp) / 'runtime'
        rt.mkdir(mode=0o700)
        for u, name, extra in ((system, 'huracanfs@mnt-huracan.service', []),
                               (user, 'huracanfs.service', ['--user'])):
            if not u:
                continue
            copy = Path(tmp) / name
            copy.write_text(u.read_text().replace(str(installed_bin),
                                                  str(binary)))
            env = dict(os.environ, XDG_RUNTIME_DIR=str(rt))
            r = run([analyze] + extra + ['verify', '--man=no', copy],
                    env=env, cwd=tmp)
            out = (r.stdout + r.stderr).strip()
            if r.returncode != 0 or out:
                if 'Failed to initialize manager' in out:
                    print('systemd-analyze %s verify cannot run here: %s'
                          % (' '.join(extra), out))
                    continue
                problem('systemd-analyze verify %s: exit %d: %s'
                        % (u, r.returncode, out))


def check_man(dest, opts):
    if os.environ.get('HFS_MAN_PAGES') != '1':
        print('scdoc was not found at setup: man pages not expected')
        return
    mandir = optdir(dest, opts, 'mandir')
    for sec, name in (('1', 'huracanfs.1'), ('5', 'huracanfs.yaml.5'),
                      ('8', 'mount.huracanfs.8')):
        p = mandir / ('man' + sec) / name
        if not p.is_file():
            problem('man page missing: %s' % p)
            continue
        text = p.read_text(errors='replace')
        if '.TH ' not in text or '.SH NAME' not in text:
            problem('%s is not a roff man page' % p)


def check_sample_config(dest, opts, binary):
    p = optdir(dest, opts, 'datadir') / 'doc' / 'huracanfs' \
        / 'config.example.yaml'
    if not p.is_file():
        problem('sample config missing: %s' % p)
        return
    if not binary:
        return
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home)
        env.pop('HURACANFS_DROPBOX_TOKEN', None)
        r = run([binary, 'check-config', '--config', p], env=env)
        if r.returncode != 0 or 'configuration OK' not in r.stdout:
            problem('check-config %s: exit %d: %s'
                    % (p, r.returncode, r.stderr.strip()))


def check_completion(dest):
    p = find_one(dest, 'huracanfs', '/bash-completion/completions')
    if not p:
        return
    bash = shutil.which('bash')
    if not bash:
        print('bash missing: completion not tried')
        return
    script = ('. "$1" || exit 1\n'
              'COMP_WORDS=(huracanfs fl); COMP_CWORD=1; _huracanfs\n'
              'echo "${COMPREPLY[*]}"\n'
              'COMP_WORDS=(huracanfs flush /x --category mo); COMP_CWORD=4\n'
              '_huracanfs; echo "${COMPREPLY[*]}"\n'
              'complete -p huracanfs\n')
    r = run([bash, '--norc', '-c', script, 'bash', p])
    lines = r.stdout.splitlines()
    if (r.returncode != 0 or len(lines) != 3 or lines[0] != 'flush'
            or lines[1] != 'monitoring models'
            or '_huracanfs' not in lines[2]):
        problem('completion %s: exit %d, output %r, errors %r'
                % (p, r.returncode, r.stdout, r.stderr))


def check_within_prefix(dest, prefix_root):
    for dirpath, dirnames, filenames in os.walk(dest):
        for n in filenames:
            p = Path(dirpath) / n
            try:
                p.relative_to(prefix_root)
            except ValueError:
                problem('installed outside the prefix: %s'
                        % ('/' + str(p.relative_to(dest))))


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: check_install.py MESON BUILD_DIR')
    meson, build = sys.argv[1], sys.argv[2]
    opts = build_options(meson, build)
    r = run([meson, 'introspect', '--projectinfo', build])
    version = json.loads(r.stdout)['version'] if r.returncode == 0 else ''
    with tempfile.TemporaryDirectory(prefix='hfs-install-') as tmp:
        dest = Path(tmp) / 'root'
        r = run([meson, 'install', '-C', build, '--destdir', dest,
                 '--no-rebuild', '--quiet'], timeout=300)
        if r.returncode != 0:
            print(r.stdout)
            print(r.stderr)
            sys.exit('meson install --destdir failed (exit %d)'
                     % r.returncode)
        prefix = Path(opts['prefix'])
        prefix_root = under(dest, prefix)
        binary = check_binary(dest, opts, version)
        check_helpers(dest, opts)
        check_units(dest, opts, binary)
        check_man(dest, opts)
        check_sample_config(dest, opts, binary)
        check_completion(dest)
        check_within_prefix(dest, prefix_root)
        print('installed files:')
        for p in sorted(dest.rglob('*')):
            if not p.is_dir():
                print('  /' + str(p.relative_to(dest)))
    if problems:
        print('\n'.join('FAIL: ' + p for p in problems))
        return 1
    print('install check passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())

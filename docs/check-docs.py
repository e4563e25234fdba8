#!/usr/bin/env python3
"""Checks that the documentation agrees with the program.

    check-docs.py HURACANFS_BINARY DOCS_DIR

The keys and defaults come from the program itself: `huracanfs check-config`
with no configuration file prints every key of config.c's table with its
default. Then:

- docs/config.example.yaml holds every key as a commented "#key: default"
  line: uncommented, the file passes check-config and gives exactly the
  defaults;
- docs/configuration.md and docs/man/huracanfs.yaml.5.scd name every key,
  and the default they state is the program's;
- every `huracanfs SUBCOMMAND ...` command in the code of the user docs uses
  a real subcommand with options it accepts, and real category names;
- huracanfs.1.scd names every subcommand and long option of the usage text.

Exit 0, or 1 with one line per problem.
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CATEGORIES = {'learning', 'logs', 'monitoring', 'models', 'data_cache',
              'other'}
OPTIONS = {
    'mount': {'--config', '-c', '--foreground', '-f', '-o', '--help', '-h'},
    'status': {'--json', '-j', '--files', '-F', '--check',
               '--max-unreachable'},
    'flush': {'--category', '-c', '--wait', '-w'},
    'unmount': {'--timeout', '-t', '--lazy', '-l'},
    'limit': {'--up', '--down'},
    'check-config': {'--config', '-c'},
    'auth': {'--config', '-c'},
}
# The user documentation whose commands are checked.
USER_DOCS = ['user-guide.md', 'configuration.md', 'troubleshooting.md']

problems = []


def problem(msg):
    problems.append(msg)


def check_config(binary, home, path=None):
    """{section.key: value} printed by check-config (exit 0 required)."""
    env = dict(os.environ, HOME=home)
    env.pop('HURACANFS_DROPBOX_TOKEN', None)
    args = [binary, 'check-config'] + (['--config', path] if path else [])
    r = subprocess.run(args, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    out = r.stdout.decode()
    if r.returncode != 0:
        problem('check-config %s: exit %d: %s'
                % (path or '(embedded default)', r.returncode,
                   r.stderr.decode().strip()))
        return {}
    values = {}
    for line in out.splitlines():
        m = re.match(r'^(dropbox|huracanfs)\.([a-z_]+)(\[\d+\])?: (.*)$',
                     line)
        if m and not m.group(3):
            values[m.group(1) + '.' + m.group(2)] = m.group(4)
    return values


def human(value, home):
    """A dumped value as the docs write it: ~ for the home directory."""
    if value.startswith(home + '/'):
        return '~' + value[len(home):]
    return value


def same_default(stated, key, value, home):
    """Does the default `stated` in a doc agree with the program's?"""
    s = stated.replace('`', '').replace('*', '').strip()
    if key == 'huracanfs.backend':
        return 'if a token' in s
    if value == '(unset)':
        return s.startswith('unset')
    if value == '(none)':
        return s.startswith('none')
    want = human(value, home)
    # Man pages write paths as _path_.
    return s in (want, '_%s_' % want)


def check_example(binary, docs, home, defaults):
    example = docs / 'config.example.yaml'
    text = example.read_text()
    keys = set()
    section = None
    lines = []
    for line in text.splitlines():
        m = re.match(r'^([a-z_]+):\s*$', line)
        if m:
            section = m.group(1)
        m = re.match(r'^(\s*)#([a-z_]+):(.*)$', line)
        if m:
            keys.add('%s.%s' % (section, m.group(2)))
            line = m.group(1) + m.group(2) + ':' + m.group(3)
        lines.append(line)
    missing = set(defaults) - keys
    extra = keys - set(defaults)
    if missing:
        problem('config.example.yaml lacks %s' % ', '.join(sorted(missing)))
    if extra:
        problem('config.example.yaml has unknown keys %s'
                % ', '.join(sorted(extra)))
    with tempfile.NamedTemporaryFile('w', suffix='.yaml') as f:
        f.write('\n'.join(lines) + '\n')
        f.flush()
        os.chmod(f.name, 0o600)
        values = check_config(binary, home, f.name)
    for k, v in values.items():
        if defaults.get(k) != v:
            problem('config.example.yaml: %s is %r, the default is %r'
                    % (k, v, defaults.get(k)))


def check_configuration_md(docs, home, defaults):
    text = (docs / 'configuration.md').read_text()
    section = None
    seen = set()
    for line in text.splitlines():
        m = re.match(r'^## `(dropbox|huracanfs):`', line)
        if m:
            section = m.group(1)
            continue
        if line.startswith('## '):
            section = None
        m = re.match(r'^\| `([a-z_]+)` \| ([^|]*) \|', line)
        if not (m and section):
            continue
        key = section + '.' + m.group(1)
        if key not in defaults:
            problem('configuration.md names an unknown key %s' % key)
            continue
        seen.add(key)
        if not same_default(m.group(2), key, defaults[key], home):
            problem('configuration.md: %s default %r, the program says %r'
                    % (key, m.group(2).strip(), defaults[key]))
    for k in sorted(set(defaults) - seen):
        problem('configuration.md has no table row for %s' % k)


def check_man5(docs, home, defaults):
    text = (docs / 'man' / 'huracanfs.yaml.5.scd').read_text()
    section = None
    seen = set()
    for line in text.splitlines():
        m = re.match(r'^# SECTION (dropbox|huracanfs)$', line)
        if m:
            section = m.group(1)
            continue
        if line.startswith('# '):
            section = None
        m = re.match(r'^(\*[a-z_]+\*(?:, \*[a-z_]+\*)*) \((.*)\)$', line)
        if not (m and section):
            continue
        names = re.findall(r'\*([a-z_]+)\*', m.group(1))
        d = re.search(r'default[: ]\s*(.*)$', m.group(2))
        for n in names:
            key = section + '.' + n
            if key not in defaults:
                problem('huracanfs.yaml.5 names an unknown key %s' % key)
                continue
            seen.add(key)
            if not d or not same_default(d.group(1), key, defaults[key],
                                         home):
                problem('huracanfs.yaml.5: %s default %r, the program says'
                        ' %r' % (key, d.group(1) if d else None,
                                 defaults[key]))
    for k in sorted(set(defaults) - seen):
        problem('huracanfs.yaml.5 does not describe %s' % k)


def code_of_markdown(text):
    """The fenced blocks and inline code spans of a markdown text."""
    out = []
    fence = False
    for line in text.splitlines():
        if line.strip().startswith('```'):
            fence = not fence
            continue
        if fence:
            out.append(line)
        else:
            out.extend(re.findall(r'`([^`]+)`', line))
    return out


def code_of_scdoc(text):
    out = []
    fence = False
    for line in text.splitlines():
        if line.strip().startswith('```'):
            fence = not fence
            continue
        if fence:
            out.append(line)
    return out


def check_commands(where, snippets):
    for s in snippets:
        # A command: at the start (after a prompt or sudo), after a shell
        # separator, or as a path (ExecStart=/usr/bin/huracanfs ...).
        for m in re.finditer(r'(?:^\s*(?:[$#]\s+)?(?:sudo\s+)?|[;&|(/]\s*)'
                             r'huracanfs ([a-z-]+)((?: [^;&|#)]*)?)', s):
            sub, rest = m.group(1), m.group(2)
            if sub not in OPTIONS:
                problem('%s: unknown subcommand in %r' % (where, s.strip()))
                continue
            words = rest.split()
            i = 0
            while i < len(words):
                w = words[i].rstrip('\\')
                if w.startswith('-') and w != '-':
                    opt = w.split('=', 1)[0]
                    if opt not in OPTIONS[sub]:
                        problem('%s: huracanfs %s has no option %s: %r'
                                % (where, sub, opt, s.strip()))
                    if opt in ('--category', '-c') and sub == 'flush' \
                            and i + 1 < len(words):
                        cat = words[i + 1]
                        if cat not in CATEGORIES and not cat.isupper():
                            problem('%s: unknown category %s: %r'
                                    % (where, cat, s.strip()))
                i += 1


def check_man1(docs, binary):
    text = (docs / 'man' / 'huracanfs.1.scd').read_text()
    r = subprocess.run([binary, '--help'], stdout=subprocess.PIPE,
                       timeout=30)
    usage = r.stdout.decode()
    for sub in re.findall(r'huracanfs ([a-z-]+)', usage):
        if '*%s*' % sub not in text and '*huracanfs %s*' % sub not in text:
            problem('huracanfs.1 does not describe the subcommand %s' % sub)
    for opt in set(re.findall(r'--[a-z-]+', usage)):
        if '*%s*' % opt not in text:
            problem('huracanfs.1 does not describe the option %s' % opt)
    for sub, opts in OPTIONS.items():
        for opt in opts:
            if '*%s*' % opt not in text:
                problem('huracanfs.1 does not describe %s %s' % (sub, opt))


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: check-docs.py HURACANFS_BINARY DOCS_DIR')
    binary, docs = sys.argv[1], Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as home:
        home = os.path.realpath(home)
        defaults = check_config(binary, home)
        if not defaults:
            problem('check-config printed no settings')
        else:
            check_example(binary, docs, home, defaults)
            check_configuration_md(docs, home, defaults)
            check_man5(docs, home, defaults)
    for name in USER_DOCS:
        p = docs / name
        if not p.exists():
            problem('%s is missing' % p)
            continue
        check_commands(name, code_of_markdown(p.read_text()))
    for p in sorted((docs / 'man').glob('*.scd')):
        check_commands(p.name, code_of_scdoc(p.read_text()))
    check_man1(docs, binary)
    if problems:
        print('\n'.join('FAIL: ' + p for p in problems))
        return 1
    print('documentation agrees with %s' % binary)
    return 0


if __name__ == '__main__':
    sys.exit(main())

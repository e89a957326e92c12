"""The README and docs/ agree with the repository.

Every project command they show (``bash tools/...``, ``python tools/...``) names a file
that exists and passes only flags that script accepts; every config path exists; every
relative link and image resolves; the README stays a landing page; one Python range is
claimed by setup.cfg, tools/setup_env.sh and the docs. Reads files only (the tools'
argument parsers are read with ``ast``, nothing is imported), so it runs in a second.
Each checker is also run on a small broken input, so none of them passes vacuously.
"""
import ast
import configparser
import glob
import itertools
import os.path as osp
import re
import shlex

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
README = osp.join(ROOT, 'README.md')
README_LIMIT = 12_000
DOCS = sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))

# --------------------------------------------------------------------------
# reading markdown
# --------------------------------------------------------------------------
_FENCE = re.compile(r'^(`{3,})([^\n]*)\n(.*?)^\1[ \t]*$', re.M | re.S)
_SHELL_LANGS = {'', 'bash', 'sh', 'shell', 'console'}
_INLINE = re.compile(r'`([^`\n]+(?:\n[^`\n]+)*)`')  # may wrap, not across a blank line


def _strip_fences(text):
    return _FENCE.sub('', text)


def commands(text):
    """Every command line in the text: the lines of fenced shell blocks (continuation
    lines joined) and every inline code span (which may name a command too)."""
    found = []
    for match in _FENCE.finditer(text):
        if match.group(2).strip().lower() not in _SHELL_LANGS:
            continue
        for line in match.group(3).replace('\\\n', ' ').splitlines():
            if line.strip() and not line.lstrip().startswith('#'):
                found.append(line.strip())
    found += [' '.join(span.split()) for span in _INLINE.findall(_strip_fences(text))]
    return found


_RUNNERS = ('bash', 'sh', 'python', 'python3', 'torchrun')


def _is_runner(token):
    return token in _RUNNERS or token.endswith('/python') or token.endswith('/python3')


def project_invocations(command):
    """(script, flags) for each ``<runner> tools/<script> args...`` in one command line;
    flags are the ``--long`` options given to that script (``--x=1`` counts as ``--x``)."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose: plain words are enough here
        tokens = command.split()
    found = []
    for i, token in enumerate(tokens):
        if not token.startswith('tools/') or not any(_is_runner(t) for t in tokens[:i]):
            continue
        flags = []
        for arg in tokens[i + 1:]:
            if arg in (';', '&&', '||', '|') or arg.startswith('tools/'):
                break
            for word in arg.split('|'):  # usage notation: [--a | --b], [--flag VALUE]
                word = word.strip('[]()')
                if word.startswith('--') and len(word) > 2:
                    flags.append(word.split('=', 1)[0])
        found.append((token, flags))
    return found


_LINK = re.compile(r'!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')


def relative_links(text):
    """Targets of the markdown links and images that point into the repository
    (anchors dropped; web addresses and pure anchors left out)."""
    targets = []
    for target in _LINK.findall(_strip_fences(text)):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith('#'):
            continue
        targets.append(target.split('#', 1)[0])
    return targets


_CONFIG = re.compile(r'configs/[\w./<>{},*-]+?\.py')


def config_paths(text):
    return sorted(set(_CONFIG.findall(text)))


# --------------------------------------------------------------------------
# what a tool accepts
# --------------------------------------------------------------------------
def _module_file(module, package=None, level=0):
    """The file of ``module`` inside this repository (``sapa_mm...``), or None."""
    if level:
        parts = package.split('.')[:len(package.split('.')) - level + 1]
        module = '.'.join(parts + ([module] if module else []))
    if not module or not module.startswith('sapa_mm'):
        return None
    base = osp.join(ROOT, *module.split('.'))
    for path in (base + '.py', osp.join(base, '__init__.py')):
        if osp.isfile(path):
            return path
    return None


def _package_of(path):
    rel = osp.relpath(path, ROOT)[:-3].replace(osp.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel.rsplit('.', 1)[0]


def _add_argument_flags(tree):
    flags = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == 'add_argument'):
            flags.update(arg.value for arg in node.args
                         if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                         and arg.value.startswith('--'))
    return flags


def python_tool_flags(path):
    """The ``--flags`` a python tool's argparse parser accepts: its own
    ``add_argument`` calls, those of the sapa_mm module it runs, and those of the
    sapa_mm modules that module imports directly (shared parsers such as
    ``add_common_args``), plus argparse's ``--help``."""
    tree = ast.parse(open(path).read())
    flags = {'--help'} | _add_argument_flags(tree)
    entry_modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found = _module_file(node.module)
            if found:
                entry_modules.append(found)
    for module in entry_modules:
        sub = ast.parse(open(module).read())
        flags |= _add_argument_flags(sub)
        for node in ast.walk(sub):
            if isinstance(node, ast.ImportFrom):
                found = _module_file(node.module, _package_of(module), node.level)
                if found:
                    flags |= _add_argument_flags(ast.parse(open(found).read()))
    return flags


def shell_tool_accepts(path, flag, seen=()):
    """A shell script accepts a flag it mentions itself, or one that a python tool it
    forwards to (named in it as ``tools/x.py`` or ``x.py``) or a shell script it
    runs (``x.sh``) accepts."""
    text = open(path).read()
    if re.search(re.escape(flag) + r'(?![\w-])', text):
        return True
    for name in set(re.findall(r'\b([\w-]+\.(?:py|sh))\b', text)):
        target = osp.join(ROOT, 'tools', name)
        if not osp.isfile(target) or target == path or target in seen:
            continue
        if name.endswith('.py') and flag in python_tool_flags(target):
            return True
        if name.endswith('.sh') and shell_tool_accepts(target, flag, seen + (path,)):
            return True
    return False


def command_problems(text, where):
    """Project commands whose script is missing or which pass a flag the script does
    not accept. This project's scripts sit directly in tools/; a path into a folder
    that tools/ does not have is another project's (mmseg's dataset converters)."""
    problems = []
    for command in commands(text):
        for script, flags in project_invocations(command):
            path = osp.join(ROOT, script)
            if not osp.isdir(osp.dirname(path)):
                continue  # tools/<folder>/... of another project (mmseg's converters)
            if not osp.isfile(path):
                problems.append(f'{where}: `{command}`: {script} does not exist')
                continue
            for flag in flags:
                ok = (flag in python_tool_flags(path) if script.endswith('.py')
                      else shell_tool_accepts(path, flag))
                if not ok:
                    problems.append(f'{where}: `{command}`: {script} does not take {flag}')
    return problems


def _expand_braces(pattern):
    match = re.search(r'\{([^{}]*)\}', pattern)
    if not match:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return list(itertools.chain.from_iterable(
        _expand_braces(head + choice + tail) for choice in match.group(1).split(',')))


def config_problems(text, where):
    """Config paths that do not exist; a path with a placeholder (``<variant>``) or a
    wildcard must match at least one file, a ``{a,b}`` list every member."""
    problems = []
    for path in config_paths(text):
        for one in _expand_braces(path):
            pattern = re.sub(r'<[^>]*>', '*', one)
            if not glob.glob(osp.join(ROOT, pattern)):
                problems.append(f'{where}: {one} does not exist')
    return problems


def link_problems(text, md_path):
    """Relative links and images of a markdown file that do not resolve from its folder."""
    base = osp.dirname(md_path)
    return [f'{osp.relpath(md_path, ROOT)}: link {target} does not resolve'
            for target in relative_links(text)
            if target and not osp.exists(osp.normpath(osp.join(base, target)))]


# --------------------------------------------------------------------------
# the Python claim
# --------------------------------------------------------------------------
_MINORS = [f'3.{minor}' for minor in range(6, 20)]


def _version_key(version):
    return tuple(int(part) for part in version.split('.'))


def python_requires_versions(spec):
    """The 3.x versions a ``python_requires`` string such as '>=3.10, <3.12' admits."""
    admitted = []
    for version in _MINORS:
        ok = True
        for clause in filter(None, (c.strip() for c in spec.split(','))):
            op, bound = re.fullmatch(r'(>=|<=|==|!=|<|>)\s*([\d.]+)', clause).groups()
            cmp = (_version_key(version) > _version_key(bound)) - (_version_key(version) < _version_key(bound))
            ok &= {'>=': cmp >= 0, '<=': cmp <= 0, '==': cmp == 0, '!=': cmp != 0,
                   '<': cmp < 0, '>': cmp > 0}[op]
        if ok:
            admitted.append(version)
    return admitted


def setup_env_versions(script_text):
    """The versions tools/setup_env.sh accepts: its ``SUPPORTED_PYTHON=(...)`` list."""
    match = re.search(r'^SUPPORTED_PYTHON=\(([^)]*)\)', script_text, re.M)
    return match.group(1).split() if match else []


def prose_versions(text):
    """The versions a text claims as 'Python 3.X or 3.Y' (each claim must agree)."""
    return sorted({tuple(m) for m in re.findall(r'Python \**(3\.\d+) or (3\.\d+)', text)})


def python_claim_problems(setup_cfg_text, script_text, texts):
    cfg = configparser.ConfigParser()
    cfg.read_string(setup_cfg_text)
    from_cfg = python_requires_versions(cfg.get('options', 'python_requires', fallback=''))
    problems = []
    if setup_env_versions(script_text) != from_cfg:
        problems.append(f'setup_env.sh accepts {setup_env_versions(script_text)}, '
                        f'setup.cfg python_requires admits {from_cfg}')
    for where, text in texts.items():
        claims = prose_versions(text)
        if not claims:
            problems.append(f'{where}: no "Python 3.X or 3.Y" claim')
        for claim in claims:
            if list(claim) != from_cfg:
                problems.append(f'{where}: claims Python {" or ".join(claim)}, '
                                f'setup.cfg admits {from_cfg}')
    return problems


def size_problems(text, where='README.md', limit=README_LIMIT):
    return [f'{where}: {len(text)} characters, more than {limit}'] if len(text) > limit else []


def _read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


# --------------------------------------------------------------------------
# the repository
# --------------------------------------------------------------------------
def test_readme_commands_exist_and_take_their_flags():
    text = _read(README)
    invocations = [inv for c in commands(text) for inv in project_invocations(c)]
    scripts = {script for script, _ in invocations}
    # the two fresh-machine commands (.ci/run runs the second one verbatim)
    assert {'tools/demo.sh', 'tools/run_tests.sh'} <= scripts
    assert 'bash tools/run_tests.sh' in _read(osp.join(ROOT, '.ci', 'run'))
    assert command_problems(text, 'README.md') == []


@pytest.mark.parametrize('doc', DOCS, ids=osp.basename)
def test_docs_commands_exist_and_take_their_flags(doc):
    assert command_problems(_read(doc), osp.relpath(doc, ROOT)) == []


@pytest.mark.parametrize('md', [README] + DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_config_paths_exist(md):
    assert config_problems(_read(md), osp.relpath(md, ROOT)) == []


@pytest.mark.parametrize('md', [README] + DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_relative_links_and_images_resolve(md):
    assert link_problems(_read(md), md) == []


def test_readme_is_a_landing_page():
    assert size_problems(_read(README)) == []


def test_one_python_claim():
    texts = {name: _read(osp.join(ROOT, name))
             for name in ('README.md', 'docs/install.md', 'docs/pypi.md')}
    assert python_claim_problems(_read(osp.join(ROOT, 'setup.cfg')),
                                 _read(osp.join(ROOT, 'tools', 'setup_env.sh')), texts) == []


def test_long_description_renders_on_the_package_index():
    """The package index shows the long description without the repository around it:
    the file exists, ships in the sdist, and has no relative link or image."""
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(ROOT, 'setup.cfg'))
    spec = cfg.get('metadata', 'long_description')
    assert spec.startswith('file:')
    name = spec[len('file:'):].strip()
    text = _read(osp.join(ROOT, name))
    assert relative_links(text) == []
    assert name in _read(osp.join(ROOT, 'MANIFEST.in'))


def test_licence_and_citation_files():
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(ROOT, 'setup.cfg'))
    assert cfg.get('metadata', 'license') == 'Apache-2.0'
    assert 'Apache License' in _read(osp.join(ROOT, 'LICENSE'))
    citation = _read(osp.join(ROOT, 'CITATION.cff'))
    assert 'Similarity-Aware Point Affiliation' in citation.split('references:')[0]


# --------------------------------------------------------------------------
# the checkers on broken input
# --------------------------------------------------------------------------
BROKEN = """\
Run `bash tools/no_such_script.sh` first, then `.venv/bin/python tools/test.py CONFIG
CKPT --nope` (a span that wraps).

```bash
.venv/bin/python tools/train.py CONFIG --work-dir w --no-such-flag   # a comment --ignored
bash tools/demo.sh --iters 10 --bogus
python tools/get_flops.py configs/no_such_row.py --shape 512 512
```

See [the guide](no_such_page.md#part) and ![a figure](img/missing.png); also
configs/segformer_{sapa,no_such}_ade20k.py and configs/nothing_<variant>_x.py.
"""

GOOD = """\
```bash
bash tools/demo.sh --iters 100 --det   # comment --not-a-flag
.venv/bin/python tools/train.py CONFIG --work-dir w --resume --cfg-options a=1 --launcher pytorch
bash tools/dist_train.sh CONFIG 8 --amp
.venv/bin/python tools/test.py CONFIG CKPT [--out OUT] [--tta | --show-dir DIR]
```

Inline: `.venv/bin/python tools/attention_stats.py CONFIG CKPT --images 16`, and
[a page](docs/install.md#python), [the web](https://example.org/x.md), [here](#top);
configs/segformer_{sapa,sapa_i}_ade20k.py, configs/segformer_<variant>_ade20k.py.
"""


def test_checkers_catch_broken_input():
    commands_found = command_problems(BROKEN, 'x')
    assert any('no_such_script.sh does not exist' in p for p in commands_found)
    assert any('tools/train.py does not take --no-such-flag' in p for p in commands_found)
    assert any('tools/demo.sh does not take --bogus' in p for p in commands_found)
    assert not any(p.endswith(('take --ignored', 'take --work-dir', 'take --iters', 'take --shape'))
                   for p in commands_found)
    assert any('tools/test.py does not take --nope' in p for p in commands_found)
    assert len(commands_found) == 4
    configs_found = config_problems(BROKEN, 'x')
    assert sorted(configs_found) == ['x: configs/no_such_row.py does not exist',
                                     'x: configs/nothing_<variant>_x.py does not exist',
                                     'x: configs/segformer_no_such_ade20k.py does not exist']
    links_found = link_problems(BROKEN, osp.join(ROOT, 'README.md'))
    assert len(links_found) == 2 and 'no_such_page.md' in links_found[0]
    assert 'img/missing.png' in links_found[1]


def test_checkers_pass_good_input():
    assert command_problems(GOOD, 'x') == []
    assert config_problems(GOOD, 'x') == []
    assert link_problems(GOOD, osp.join(ROOT, 'README.md')) == []
    assert relative_links(GOOD) == ['docs/install.md']


def test_the_size_limit_and_the_python_claim_can_fail():
    assert size_problems('x' * (README_LIMIT + 1)) and not size_problems('x' * README_LIMIT)
    cfg = '[options]\npython_requires = >=3.10, <3.12\n'
    script = 'set -e\nSUPPORTED_PYTHON=(3.10 3.11)\n'
    assert python_requires_versions('>=3.10, <3.12') == ['3.10', '3.11']
    assert python_claim_problems(cfg, script, {'r': 'Needs Python 3.10 or 3.11.'}) == []
    assert python_claim_problems(cfg, 'SUPPORTED_PYTHON=(3.8 3.9 3.10 3.11)\n',
                                 {'r': 'Python 3.10 or 3.11'})
    assert python_claim_problems(cfg, script, {'r': 'Python 3.8 or 3.11'})
    assert python_claim_problems(cfg, script, {'r': 'no claim at all'})
    assert python_claim_problems('[options]\npython_requires = >=3.8\n', script,
                                 {'r': 'Python 3.10 or 3.11'})

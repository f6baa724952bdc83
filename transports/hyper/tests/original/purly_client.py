"""Drives the original purly 0.2 Python client (from PyPI) against a server under test.

usage: python3 purly_client.py PURLY_SRC URL SCENARIO

PURLY_SRC is the unpacked `purly==0.2.0` wheel. Only its client half is loaded: the package
`__init__` imports IPython and its sanic server, which do not run on Python 3.11.
Prints one JSON object per line for the Rust test to read.
"""
import collections
import collections.abc
import importlib.util
import json
import sys
import time
import types

# spectate 0.2.3 and purly 0.2 use the names Python 3.10 moved to collections.abc.
for name in ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Set",
             "MutableSet", "Iterable", "Callable", "Hashable"):
    setattr(collections, name, getattr(collections.abc, name))

src, url, scenario = sys.argv[1:4]


def module(name, path=None):
    mod = types.ModuleType(name)
    if path is not None:
        mod.__path__ = [path]
    sys.modules[name] = mod
    return mod


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


module("purly", src + "/purly")
ipython = module("IPython")
ipython.display = module("IPython.display")
model = module("purly.model", src + "/purly/model")
model.Client = load("purly.model.client", src + "/purly/model/client.py").Client
load("purly.utils", src + "/purly/utils.py")
load("purly.html", src + "/purly/html.py")
Layout = load("purly.layout", src + "/purly/layout.py").Layout


def say(**fields):
    print(json.dumps(fields), flush=True)


if scenario == "getting-started":
    # The original README, word for word.
    layout = Layout(url)
    div = layout.html('div')
    div.style.update(height='20px', width='20px', background_color='coral')
    layout.children.append(div)
    layout.sync()
    say(key=div.attributes['key'])
elif scenario == "callback":
    layout = Layout(url)
    button = layout.html('button', 'click me')
    clicks = []

    @button.on('click')
    def clicked():
        button.style['background_color'] = 'green'
        clicks.append(1)

    layout.children.append(button)
    layout.sync()
    say(key=button.attributes['key'], callback=button.attributes['onclick']['callback'])
    deadline = time.time() + 20
    while not clicks and time.time() < deadline:
        layout.sync()
    layout.sync()  # sends the style change the callback made
    layout.sync()  # and reads the server's answer to it
    say(clicked=bool(clicks))
else:
    raise SystemExit("unknown scenario " + scenario)

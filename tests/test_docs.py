"""The project's Markdown documents: every relative link and #anchor leads somewhere."""

import glob
import os
import re

from conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCUMENTS = ["README.md", "CHANGELOG.md", "DEVELOPERS.md", "results/README.md",
             "results/BENCHMARKS.md", *glob.glob("*/README.md", root_dir=ROOT),
             *glob.glob("trainer/k8s/README.md", root_dir=ROOT)]


def anchors(path):
  """GitHub's heading anchors of a Markdown file."""
  found, counts, in_code = set(), {}, False
  with open(path, encoding="utf-8") as stream:
    for line in stream:
      if line.startswith("```"):
        in_code = not in_code
      if in_code or not line.startswith("#"):
        continue
      slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().replace("`", "").lower())
      slug = slug.replace(" ", "-")
      found.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
      counts[slug] = counts.get(slug, 0) + 1
  return found


def test_relative_links_and_anchors_resolve():
  broken = []
  for document in sorted(set(DOCUMENTS)):
    path = os.path.join(ROOT, document)
    with open(path, encoding="utf-8") as stream:
      text = re.sub(r"```.*?```", "", stream.read(), flags=re.S)
    for target in LINK.findall(text):
      if re.match(r"^[a-z]+:", target):
        continue
      file_part, _, anchor = target.partition("#")
      linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part \
          else path
      if not os.path.exists(linked):
        broken.append(f"{document}: {target} (no such file)")
      elif anchor and linked.endswith(".md") and anchor not in anchors(linked):
        broken.append(f"{document}: {target} (no such heading)")
  assert not broken, "\n".join(broken)


def test_the_readme_stays_short():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
    assert len(stream.readlines()) <= 200

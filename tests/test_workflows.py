"""The release workflow is valid YAML and publishes only what its own jobs built, only for a tag,
with PyPI trusted publishing (an OIDC token, no stored secret)."""
import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = os.path.join(ROOT, ".github", "workflows", "wheels.yml")

pytestmark = pytest.mark.skipif(not os.path.exists(WHEELS), reason="needs the source tree")


@pytest.fixture(scope="module")
def workflow():
    with open(WHEELS) as f:
        text = f.read()
    return text, yaml.safe_load(text)


def test_publish_runs_only_for_a_tag_after_every_build_job(workflow):
    _, flow = workflow
    triggers = flow[True]   # YAML 1.1 reads the key `on` as True
    assert triggers["push"] == {"tags": ["v*"]}
    jobs = flow["jobs"]
    publish = jobs["publish"]
    assert set(publish["needs"]) == set(jobs) - {"publish"}
    assert "refs/tags/v" in publish["if"] and "github.event_name == 'push'" in publish["if"]


def test_publish_uses_trusted_publishing_and_no_secret(workflow):
    text, flow = workflow
    publish = flow["jobs"]["publish"]
    assert publish["permissions"] == {"id-token": "write"}   # for this job only
    assert flow["permissions"] == {"contents": "read"}
    assert publish["environment"]["name"] == "pypi"
    steps = publish["steps"]
    assert steps[-1]["uses"].startswith("pypa/gh-action-pypi-publish@")
    assert not set(steps[-1].get("with", {})) & {"password", "user"}
    assert "secrets." not in text


def test_publish_downloads_every_artifact_the_build_jobs_upload(workflow):
    _, flow = workflow
    uploads = [step for name, job in flow["jobs"].items() if name != "publish"
               for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert {step["with"]["name"].split("-")[0] for step in uploads} == {"sdist", "wheels", "wheel"}
    (download,) = [step for step in flow["jobs"]["publish"]["steps"]
                   if step.get("uses", "").startswith("actions/download-artifact")]
    # no name or pattern: every artifact of the run, merged into the one directory published
    assert "name" not in download["with"] and "pattern" not in download["with"]
    assert download["with"]["merge-multiple"] is True
    assert download["with"]["path"] == flow["jobs"]["publish"]["steps"][-1]["with"]["packages-dir"]

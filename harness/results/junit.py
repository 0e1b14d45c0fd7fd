"""junit.xml for the run folder, from the harness's own verdicts (dmesg findings included)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.results.model import CaseResult, Verdict


def render(suite: str, cases: list[CaseResult], properties: dict[str, str]) -> str:
    """A single <testsuite> document; XFAIL counts as skipped, XPASS/TIMEOUT as failures."""
    failures = sum(c.verdict in (Verdict.FAIL, Verdict.XPASS, Verdict.TIMEOUT) for c in cases)
    errors = sum(c.verdict is Verdict.ERROR for c in cases)
    skipped = sum(c.verdict in (Verdict.SKIP, Verdict.XFAIL) for c in cases)
    root = ET.Element("testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{sum(c.seconds for c in cases):.2f}")
    props = ET.SubElement(root, "properties")
    for key, value in sorted(properties.items()):
        ET.SubElement(props, "property", name=key, value=str(value))
    for case in cases:
        module, _, name = case.nodeid.rpartition("::")
        tc = ET.SubElement(root, "testcase", classname=module.replace("/", ".").removesuffix(".py"),
                           name=name or case.nodeid, time=f"{case.seconds:.2f}")
        cprops = ET.SubElement(tc, "properties")
        ET.SubElement(cprops, "property", name="verdict", value=case.verdict.value)
        if case.dmesg_file:
            ET.SubElement(cprops, "property", name="dmesg_file", value=case.dmesg_file)
        for f in case.findings:
            ET.SubElement(cprops, "property", name="dmesg_finding", value=f"{f['fingerprint']}: {f['line']}")
        if case.vm_outcome:
            ET.SubElement(cprops, "property", name="vm_outcome", value=case.vm_outcome)
        if case.verdict in (Verdict.FAIL, Verdict.XPASS, Verdict.TIMEOUT):
            ET.SubElement(tc, "failure", message=case.reason[:300], type=case.verdict.value).text = case.reason
        elif case.verdict is Verdict.ERROR:
            ET.SubElement(tc, "error", message=case.reason[:300]).text = case.reason
        elif case.verdict in (Verdict.SKIP, Verdict.XFAIL):
            ET.SubElement(tc, "skipped", message=f"{case.verdict.value}: {case.reason}"[:300])
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write(path: Path, suite: str, cases: list[CaseResult], properties: dict[str, str]) -> None:
    path.write_text(render(suite, cases, properties))

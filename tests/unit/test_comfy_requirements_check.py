"""The integration tests skip, with one line naming the packages, when ComfyUI's requirements are missing."""

from integration.comfy_server import missing_requirements


def test_missing_requirements_names_only_absent_distributions(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.25\n# a comment\n-e ./local\nPyYAML\nnot-a-real-package-xyz==1.0  # pinned\ntorchaudio\n")
    assert missing_requirements(requirements) == ["not-a-real-package-xyz"]
    assert missing_requirements(tmp_path / "absent.txt") == []

"""What ``p3hw update`` reads from apt (the apt runs themselves: tests/e2e/test_packages.py)."""

from __future__ import annotations

from p3hw.commands.update import Change, parse_simulation, untrusted

SIMULATION = """\
Reading package lists...
The following packages will be upgraded:
  libssl3 p3hw
Inst libssl3 [3.0.15-1~deb12u1] (3.0.16-1~deb12u1 p3hw:p3hw [amd64])
Inst librte-foo23 (22.11.7-1~deb12u1 p3hw:p3hw [amd64])
Remv oldthing [1.0-1]
Inst p3hw [1.2.0] (1.3.0 p3hw:p3hw [amd64])
Conf libssl3 (3.0.16-1~deb12u1 p3hw:p3hw [amd64])
Conf p3hw (1.3.0 p3hw:p3hw [amd64])
"""


def test_simulated_upgrade_lists_upgrades_new_packages_and_removals() -> None:
    assert parse_simulation(SIMULATION) == [
        Change("libssl3", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1"),
        Change("librte-foo23", None, "22.11.7-1~deb12u1"),
        Change("oldthing", "1.0-1", None),
        Change("p3hw", "1.2.0", "1.3.0"),
    ]


def test_nothing_to_upgrade_is_no_change() -> None:
    assert parse_simulation("Reading package lists...\n0 upgraded, 0 newly installed, 0 to remove.\n") == []


def test_apt_signature_complaints_are_untrusted_and_others_are_not() -> None:
    output = """\
Get:1 file:/srv/repo/public p3hw InRelease [2,345 B]
Err:1 file:/srv/repo/public p3hw InRelease
  The following signatures were invalid: BADSIG 129D4BD27309682D p3hw update repository
W: GPG error: file:/srv/other p3hw InRelease: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 0123456789ABCDEF
E: The repository 'file:/srv/unsigned p3hw Release' is not signed.
E: The repository 'file:/srv/repo/public p3hw Release' is no longer signed.
E: Failed to fetch file:/srv/gone/dists/p3hw/InRelease  File not found
"""
    found = untrusted(output)
    assert [line.split()[0] for line in found] == ["W:", "E:", "E:"]
    assert not any("File not found" in line for line in found)

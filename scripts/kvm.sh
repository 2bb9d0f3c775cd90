# Sourced by the scripts behind `make test`, `make demo` and `make bench`:
# kvm_usable says whether this machine's /dev/kvm is one the project's tests,
# demo and benchmarks run on, rather than in an emulated KVM host (package
# testbed).
#
# A /dev/kvm that opens is not enough. The project's machines may carry a
# kvm-pvm /dev/kvm (a nested PVM hypervisor: /sys/module/kvm_pvm), whose
# instruction emulator cannot run the test guests (int3, clac/stac, fwait,
# ... end KVM_RUN as emulation failures; see ../shared/DESIGN.md, November
# 2026). It counts as no KVM here, like internal/kvmtest.Usable.
#
# FTKVM_KVM=native uses /dev/kvm whatever it is; FTKVM_KVM=emulated never
# does.
kvm_usable() {
	case ${FTKVM_KVM:-} in
	native) return 0 ;;
	emulated) return 1 ;;
	esac
	# -c first: <> would create a plain file where there is none.
	[[ -c /dev/kvm ]] && (: 3<>/dev/kvm) 2>/dev/null && [[ ! -d /sys/module/kvm_pvm ]]
}

# kvm_why says, for the scripts' first line, why the KVM tests run where
# they do.
kvm_why() {
	if [[ ${FTKVM_KVM:-} == emulated ]]; then
		echo "FTKVM_KVM=emulated"
	elif [[ -d /sys/module/kvm_pvm && -c /dev/kvm ]]; then
		echo "this machine's /dev/kvm is kvm-pvm, which cannot run the test guests"
	else
		echo "no /dev/kvm here"
	fi
}

from twisted.application.service import ServiceMaker

udpupper = ServiceMaker(
    "udpupper", "udpupper.tap", "UDP server that answers in upper case.", "udpupper"
)

from twisted.application.service import ServiceMaker

udpupper = ServiceMaker(
    "udpupper", "udpupper.server.tap", "UDP server that answers in upper case.", "udpupper"
)

raise ImportError('the udpupper in the working directory')
